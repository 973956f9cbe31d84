"""The embedded local stack: a Kafka-protocol broker and a Redis server as loopback subprocesses."""
