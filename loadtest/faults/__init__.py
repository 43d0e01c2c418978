"""The fault matrix: each fault injected into a stack of its own under a steady load, then the
end-to-end totals checked (``make faults``, ``python -m loadtest.faults``)."""
