"""Benchmarks and load generators, on top of everything: they import ``streams`` and
``services``; nothing imports them. Their CLI (`streamscore load ...`) is registered from here
through the ``streamscore.commands`` entry point."""
