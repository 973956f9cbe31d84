"""Composition root: the topic table, the CLI, and the workers that wire `services` to Kafka."""
