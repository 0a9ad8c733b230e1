"""Estimators and their specs (``specs``: one per model): fit / predict / explain, no I/O."""
