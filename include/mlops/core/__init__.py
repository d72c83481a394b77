"""Settings, model configs, errors, lake I/O, locks, label handling and MLflow set-up: what every other package uses."""
