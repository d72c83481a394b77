"""MLOps platform library: the typed, Airflow-free logic behind the DAGs in ``dags/``."""

from __future__ import annotations

from mlops import feastboot as _feastboot

__version__ = "0.1.0"

_feastboot.install()  # Feast without typeguard's import-time recompilation (see mlops.feastboot)
