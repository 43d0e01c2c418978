"""Numbered SQL migrations, shipped as package data and applied by meterflow.store.migrations."""
