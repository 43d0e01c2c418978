"""Stripe's rules, as pure functions: what a meter event must satisfy to count."""
