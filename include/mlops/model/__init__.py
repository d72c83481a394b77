"""Training, the MLflow registry (aliases, history, rollback), signing, scoring and promotion approval."""
