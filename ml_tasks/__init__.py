"""Ratchet's task logic: every Airflow task is a call into this package.

Nothing here imports Airflow, and nothing heavy is imported at package import
time, so DAG files can import the light modules (settings, datasets, config)
while parsing.
"""

__version__ = "0.1.0"
