"""Kafka plumbing shared by every worker: client configuration, topic specs, admin helpers."""
