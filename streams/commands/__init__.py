"""CLI subcommands, grouped by the person using them; `streams/cli.py` assembles them."""
