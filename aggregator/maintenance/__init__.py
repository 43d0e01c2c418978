"""Retention: pruning rows and dropping partitions no longer needed."""
