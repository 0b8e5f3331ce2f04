"""Release stages: evaluation and metrics, the gate, the registry, infra validation, model card, the pyfunc."""
