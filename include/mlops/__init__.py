"""MLOps platform library: the typed, Airflow-free logic behind the DAGs in ``dags/``."""

from __future__ import annotations

__version__ = "0.1.0"
