"""Shared by the training and reliability tests: a tiny training config and the environment of child runs."""

import os

TINY_CONFIG = """
batch_size: 4
preprocessing: {grid: [32, 32, 32]}
graph: {liver_parcels: 4}
teacher: {feature_size: 12, depths: [1, 1, 1, 1]}
student: {init_filters: 8, blocks_down: [1, 1, 1, 1]}
"""
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
