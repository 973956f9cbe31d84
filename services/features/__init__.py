"""Online features: the spec, the FeatureStore seam (Redis, in-memory), and row assembly."""
