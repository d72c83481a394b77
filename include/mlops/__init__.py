"""MLOps platform library: the typed, Airflow-free logic behind the DAGs in ``dags/``.

Importing it has no side effects; see ARCHITECTURE.md for the packages and what each owns.
"""

__version__ = "0.1.0"
