"""Training stages: tuning and its trials, the trainer, model families (declarations, the Keras MLP, scikit-learn
models), input pipeline, checkpoints, multi-host (rendezvous, workers)."""
