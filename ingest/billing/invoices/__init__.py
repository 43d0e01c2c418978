"""``/v1/invoices``: the invoices the closer made (list, retrieve, lines, pay out of band, void)
and ``create_preview``, what a subscription's current period costs so far."""
