"""Credit balance alerts: each fires once when its customer's available credit balance is at or
below its value while it is armed, and is re-armed when an evaluation finds the balance above
the value again. Evaluated for the customers of every usage-change batch, and by a sweep of the
customers whose ledger or grants changed."""
