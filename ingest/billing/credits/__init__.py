"""Billing credits: grants, the ledger of their balance transactions, and balance summaries."""
