"""Retraining: when to retrain and what a challenger must beat (``policy``, pure), and the
trainer that answers a retrain request with a new registered version (``trainer``)."""
