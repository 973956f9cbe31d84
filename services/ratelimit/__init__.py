"""Per-producer rate limits: a token bucket per producer, shared by all workers through Redis."""
