"""What the DAG files use: DAG generation and Assets (dagkit), the house pod operator, the preloading executor."""
