"""MLflow tracking and the model registry."""
