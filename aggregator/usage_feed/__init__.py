"""The usage feed: the fold appends what usage changed to the ``usage_changes`` outbox in its
transaction; the relay moves those rows to the usage-changes topic, which the alert evaluator
(another process) reads."""
