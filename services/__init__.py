"""streamscore library code: pure stage logic and IO adapters; never imports faust or `streams`."""
