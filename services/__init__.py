"""streamscore library code: pure stage logic and IO adapters; imports neither faust nor `streams`."""
