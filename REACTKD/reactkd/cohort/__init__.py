"""Cohorts: the manifest (one reader, one writer, one path rule), folds, the preprocessed-cohort cache and the
synthetic cohort generator."""
