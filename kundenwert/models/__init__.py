"""Estimators: CLV, churn, win-back, affinity, channel response (no I/O)."""
