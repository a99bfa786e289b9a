"""Synthetic dual-tracer (18F-FDG and 11C-acetate) PET/CT cohort with a known, graded HCC signal.

CT carries a weak grade signal (tumour size, attenuation, heterogeneity, necrosis, margin), PET a strong one
(FDG uptake rises, acetate uptake falls with grade). See docs/synthetic-cohort.md.
"""

from .case import SyntheticCase, TumourTruth, generate_case
from .cohort import MANIFEST_COLUMNS, write_cohort
from .grids import SIZES

__all__ = ["MANIFEST_COLUMNS", "SIZES", "SyntheticCase", "TumourTruth", "generate_case", "write_cohort"]
