"""Semantic validation of decoded records against rules declared next to the schemas."""
