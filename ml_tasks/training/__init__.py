"""Training stages: tuning, the trainer, model families, the Keras MLP, input pipeline, checkpoints, multi-host."""
