"""Online drift detection: River detectors per partition and signal (``monitor``), and the
``DriftSignal`` records their firings become (``signals``)."""
