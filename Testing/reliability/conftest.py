"""Shared fixtures of the reliability suite, the `fuzz` marker and the "long" hypothesis profile.

`make fuzz` runs `pytest Testing -m fuzz --hypothesis-profile=long`. In a normal run each property takes the
few dozen examples set in rel_support.fuzz_settings, so CI's share of fuzzing stays short.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from rel_support import TINY_CONFIG

#: The REACTKD module folder (Slicer puts it on sys.path itself): its Slicer-side REACTKDLib is tested too.
MODULE_DIR = Path(__file__).resolve().parents[2] / "REACTKD"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

settings.register_profile("long", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def pytest_configure(config):
    # pyproject.toml lists the marker; registering it again keeps this folder usable on its own.
    config.addinivalue_line("markers", "fuzz: property-based and fuzz tests (short in make test, long in make fuzz)")


@pytest.fixture(scope="session")
def case_dir(tmp_path_factory) -> Path:
    """One small synthetic PET/CT case on disk: ct, pet_fdg, pet_act, mask (.nii.gz)."""
    from reactkd.cohort.synth import generate_case
    from reactkd.images.writers import write_image

    folder = tmp_path_factory.mktemp("rel_case")
    case = generate_case(3, 2, size="small")
    for name in ("ct", "pet_fdg", "pet_act", "mask"):
        write_image(getattr(case, name), folder / f"{name}.nii.gz")
    return folder


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory) -> Path:
    """An untrained student package (real safetensors + checksummed metadata) on a 16 x 32 x 32 grid."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from model_packages import make_package

    return make_package(tmp_path_factory.mktemp("rel_model") / "student")


@pytest.fixture(scope="session")
def manifest_dir(tmp_path_factory, case_dir) -> Path:
    """A cohort folder with a valid one-row manifest.csv (a copy of `case_dir`) and the tiny config."""
    root = tmp_path_factory.mktemp("rel_cohort")
    shutil.copytree(case_dir, root / "case0")
    (root / "manifest.csv").write_text(
        "case_id,patient_id,label,ct,pet_fdg,pet_act,mask\n"
        "c0,p0,poor,case0/ct.nii.gz,case0/pet_fdg.nii.gz,case0/pet_act.nii.gz,case0/mask.nii.gz\n")
    (root / "tiny.yaml").write_text(TINY_CONFIG)
    return root
