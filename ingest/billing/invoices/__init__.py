"""``/v1/invoices/create_preview``: what a subscription's current period costs so far, rated
from live usage."""
