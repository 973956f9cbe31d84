"""The control plane: a faust-streaming app (label join, drift aggregation, retraining, model
events, automatic promotion). Agent bodies only move data; the logic is in ``services``."""
