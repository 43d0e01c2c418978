"""``/v1/customers``: who is billed. Meter events name customers by id alone, so usage may
exist before (or without) the customer object; rating joins on the id."""
