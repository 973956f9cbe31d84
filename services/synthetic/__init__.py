"""Synthetic worlds and hostile inputs: the library the demo, ``train`` and the tests draw events,
labels and features from (a domain's ``generator`` names its module here, or its own)."""
