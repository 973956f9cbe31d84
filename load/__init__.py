"""Load generators and benchmarks; reuses services.codec, never imported by production code."""
