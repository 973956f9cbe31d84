"""Training: build and validate a training set, train, evaluate (pure over arrays)."""
