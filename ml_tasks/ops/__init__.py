"""Operating Ratchet: the `ratchet` CLI, the demo, the production profile, Airflow CLI helpers."""
