"""The one Kafka layer: topics and partitioning, the producer factory, the stored-offset consumer
base every consumer group uses, its offsets store with the fence, and consumer lag."""
