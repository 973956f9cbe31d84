"""Cross-cutting pieces every domain uses: settings, errors, logging, metrics."""
