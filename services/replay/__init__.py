"""Replaying topic ranges: the plan (what to read) and the diff (what changed), both pure."""
