"""Billing objects as stored and as Stripe writes them: prices, subscriptions, invoices."""
