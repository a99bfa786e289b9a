"""Training engine: configuration, cohort cache, folds, the three stages, checkpoints, DDP."""
