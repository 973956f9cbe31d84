"""Dead letters after the fact: summarising them and planning redrives (pure)."""
