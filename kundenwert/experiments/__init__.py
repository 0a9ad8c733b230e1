"""MLflow I/O only: runs, metrics, plots, the model registry and its aliases (never the policy)."""
