"""The fold: meter-events records into raw events, minute rollups and pre-aggregation windows,
exactly once, with the stored offsets in the same transaction."""
