"""Scoring: loaded models, the MLflow registry adapter, and the pure per-batch scoring stages."""
