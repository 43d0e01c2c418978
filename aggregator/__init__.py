"""Kafka consumers and the work beside them. Two processes live here: the aggregator
(:mod:`aggregator.process`: rollups, the usage feed, error reports, webhooks, maintenance) and the
alert evaluator (:mod:`aggregator.alerts.process`)."""
