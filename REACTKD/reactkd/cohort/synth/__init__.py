"""Synthetic dual-tracer (18F-FDG and 11C-acetate) PET/CT cohort with a known, graded HCC signal.

A latent, continuous differentiation per patient drives CT (tumour size, attenuation, heterogeneity, necrosis,
margin) and PET (FDG uptake rises, acetate uptake falls with grade); the recorded grade is a noisy reading of
it. Worlds (`worlds.py`): v2 (default, calibrated to the clinical literature), null (PET blind to the latent
grade) and v1 (the first cohort, byte for byte). See docs/synthetic-cohort.md.
"""

from reactkd.cohort.synth.case import SyntheticCase, TumourTruth, generate_case
from reactkd.cohort.synth.cohort import write_cohort
from reactkd.cohort.synth.grids import SIZES

__all__ = ["SIZES", "SyntheticCase", "TumourTruth", "generate_case", "write_cohort"]
