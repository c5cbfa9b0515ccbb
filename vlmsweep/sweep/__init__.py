"""Optuna sweeps: the shared-study sweeper (hydra/sweeper=optuna) and the summaries of a study."""
