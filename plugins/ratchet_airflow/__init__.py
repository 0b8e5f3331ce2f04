"""Airflow glue shared by Ratchet's DAGs. Airflow puts `plugins/` on sys.path.

Import it inside task functions: it is resolved at run time, never at parse time.
"""
