"""Bad-input matrix, library side: manifests, training configs, devices, low-dose simulation options."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import SimpleITK as sitk

from reactkd.cohort.manifest import read_manifest
from reactkd.devices import cuda_usable, resolve_device
from reactkd.errors import ConfigError, DeviceError, ManifestError
from reactkd.ldct.simulator import simulate_low_dose_image
from reactkd.package.model_package import metadata_problems
from reactkd.training.config import config_to_dict, load_config

HEADER = "case_id,patient_id,label,ct,pet_fdg,pet_act,mask"
ROW = "c0,p0,poor,case0/ct.nii.gz,,,case0/mask.nii.gz"


def _outside_symlink(root: Path) -> str:
    """A link inside the cohort folder whose target lies outside it."""
    target = root.parent / f"{root.name}-outside.nii.gz"
    target.write_bytes(b"x")
    (root / "case0" / "link.nii.gz").symlink_to(target)
    return "case0/link.nii.gz"


MANIFEST_CASES = {
    "missing-columns": (lambda r: "case_id,patient_id,label,ct\nc0,p0,poor,case0/ct.nii.gz",
                        "missing column.*pet_fdg, pet_act, mask"),
    "duplicate-case-ids": (lambda r: "\n".join([HEADER, ROW, ROW.replace("p0", "p1")]), "duplicate case_id 'c0'"),
    "unknown-label": (lambda r: "\n".join([HEADER, ROW.replace("poor", "excellent")]), "unknown label 'excellent'"),
    "label-index-3": (lambda r: "\n".join([HEADER, ROW.replace("poor", "3")]), "unknown label '3'"),
    "absolute-path": (lambda r: "\n".join([HEADER, ROW.replace("case0/ct.nii.gz", str(r / "case0/ct.nii.gz"))]),
                      "absolute path"),
    "dotdot-path-outside": (lambda r: "\n".join([HEADER, ROW.replace("case0/ct.nii.gz", "../../etc/passwd")]),
                            "points outside the cohort folder"),
    "symlink-outside": (lambda r: "\n".join([HEADER, ROW.replace("case0/ct.nii.gz", _outside_symlink(r))]),
                        "points outside the cohort folder"),
    "missing-image-file": (lambda r: "\n".join([HEADER, ROW.replace("case0/ct.nii.gz", "case0/absent.nii.gz")]),
                           "file not found: case0/absent.nii.gz"),
    "pet-without-ct": (lambda r: "\n".join([HEADER, "c0,p0,poor,,case0/pet_fdg.nii.gz,,case0/mask.nii.gz"]),
                       "PET without CT"),
    "no-cases": (lambda r: HEADER, "manifest has no cases"),
    "binary-garbage": (lambda r: b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00", "cannot read manifest"),
}


@pytest.mark.parametrize("case_id", list(MANIFEST_CASES))
def test_read_manifest_refuses(case_id, tmp_path):
    root = tmp_path / "cohort"
    (root / "case0").mkdir(parents=True)
    for name in ("ct", "mask", "pet_fdg"):
        (root / "case0" / f"{name}.nii.gz").write_bytes(b"x")
    build, pattern = MANIFEST_CASES[case_id]
    content = build(root)
    path = root / "manifest.csv"
    path.write_bytes(content if isinstance(content, bytes) else (content + "\n").encode())
    with pytest.raises(ManifestError, match=pattern):
        read_manifest(path)


CONFIG_CASES = {
    "unknown-key": ("epochs: 3\nlearnign_rate: 0.1\n", "unknown config key.*learnign_rate"),
    "unknown-nested-key": ("graph: {max_tumors: 4}\n", r"unknown config key.*graph\.max_tumors"),
    "wrong-type-string-for-int": ("epochs: ten\n", "'epochs' must be of type int"),
    "wrong-type-bool-for-int": ("batch_size: true\n", "'batch_size' must be of type int"),
    "wrong-type-list-item": ("doses: [1.0, half]\n", r"'doses\[\]' must be of type float"),
    "wrong-type-mapping": ("graph: 3\n", "'graph' must be a mapping"),
    "value-out-of-range": ("alpha: 2.0\n", "alpha must lie in"),
    "bad-preprocessing-key": ("preprocessing: {gird: [8, 8, 8]}\n", "preprocessing"),
    "invalid-yaml": ("epochs: [1, 2\n", "invalid YAML"),
    "yaml-not-a-mapping": ("- 1\n- 2\n", "must be a YAML mapping"),
    "yaml-python-object-tag": ("epochs: !!python/object/apply:os.system ['touch {marker}']\n", "invalid YAML"),
    # issue 15, class 7
    "yaml-alias-bomb": ("a: &a [" + ",".join(['"lol"'] * 9) + "]\n" + "".join(
        f"{n}: &{n} [" + ",".join([f"*{p}"] * 9) + "]\n" for p, n in zip("abcdefgh", "bcdefghi")),
        "expands \\(through YAML aliases\\) into more than"),
    "non-string-key": ("1: 2\n", "config keys must be names, got 1"),
    "nan-learning-rate": ("learning_rate: .nan\n", "learning_rate must be a finite number"),
    "inf-learning-rate": ("learning_rate: .inf\n", "learning_rate must be a finite number"),
    "huge-learning-rate": ("learning_rate: 1.0e+9\n", "learning_rate in \\(0, 1\\]"),
    "zero-class-weights": ("class_weights: [0, 0, 0]\n", "not all 0"),
    "negative-class-weight": ("class_weights: [1, -1, 1]\n", "non-negative"),
    "negative-focal-gamma": ("focal_gamma: -1.0\n", "focal_gamma in \\[0, 10\\]"),
    "nan-dose": ("doses: [.nan]\n", "doses"),
    "absurd-epochs": ("epochs: 1000000000\n", "epochs"),
    # Graph and RGD settings a model package could not be loaded with: refused before training (issue 22).
    "too-many-tumours": ("graph: {max_tumours: 100}\n", r"graph\.max_tumours must be a number in \[1, 64\]"),
    "no-liver-parcels": ("graph: {liver_parcels: 0}\n", r"graph\.liver_parcels must be a number in \[1, 64\]"),
    "huge-ring": ("graph: {ring_mm: 80.0}\n", r"graph\.ring_mm must be a number in \[0, 50\]"),
    "nan-ring": ("graph: {ring_mm: .nan}\n", r"graph\.ring_mm must be a number"),
    "huge-gw-epsilon": ("gw_epsilon: 100.0\n", r"gw_epsilon must be a number in \[0\.0001, 10\]"),
    "negative-edge-weight": ("edge_weight: -1.0\n", r"edge_weight must be a number in \[0, 100\]"),
    "old-place-out-of-range": ("graph: {gw_epsilon: 0.0}\n", r"gw_epsilon must be a number"),
    "loss-key-in-both-places": ("edge_weight: 1.0\ngraph: {edge_weight: 2.0}\n", "both at the top level and in graph"),
    "long-bad-value": ("epochs: [" + ",".join(["1"] * 5000) + "]\n", "must be of type int, got \\[1, 1,.*\\.\\.\\.$"),
}


@pytest.mark.parametrize("case_id", list(CONFIG_CASES))
def test_load_config_refuses(case_id, tmp_path):
    text, pattern = CONFIG_CASES[case_id]
    marker = tmp_path / "marker"
    path = tmp_path / "config.yaml"
    path.write_text(text.replace("{marker}", str(marker)))
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    assert not marker.exists()  # safe_load never constructs Python objects


def test_rgd_keys_in_their_former_place_still_load(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("graph: {max_tumours: 4, gw_epsilon: 0.1, edge_weight: 0.5}\n")
    config = load_config(path)
    assert (config.gw_epsilon, config.edge_weight, config.graph.max_tumours) == (0.1, 0.5, 4)
    assert config_to_dict(config)["graph"] == {"max_tumours": 4, "liver_parcels": 8, "ring_mm": 5.0}


@pytest.mark.parametrize("text", ["graph: {max_tumours: 64, liver_parcels: 1, ring_mm: 0.0}\n",
                                  "graph: {max_tumours: 1, liver_parcels: 64, ring_mm: 50.0}\n",
                                  "gw_epsilon: 1.0e-4\nedge_weight: 100.0\n", "gw_epsilon: 10.0\nedge_weight: 0.0\n"])
def test_a_config_that_loads_makes_a_loadable_package(text, tmp_path):
    """The bounds a package's metadata is checked against are the config's: the extremes pass both."""
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    config = load_config(path)
    metadata = {"name": "x", "version": "1", "architecture": "student", "input_modalities": ["ct"], "architecture_args": {},
                "preprocessing": config.preprocess_config().to_dict(), "graph": config.package_graph()}
    assert metadata_problems(metadata) == []


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda0", "cuda:x", "cpu:0:1"])
def test_unknown_device_is_refused(name):
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device(name)


@pytest.mark.skipif(cuda_usable(), reason="needs a machine without a usable CUDA device")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA"])
def test_cuda_requested_without_cuda(name):
    with pytest.raises(DeviceError, match="no usable CUDA device"):
        resolve_device(name)


@pytest.mark.parametrize("dose", [0.0, 2.0, -0.5, math.nan, math.inf])
def test_low_dose_fraction_out_of_range(dose, case_dir):
    ct = sitk.ReadImage(str(case_dir / "ct.nii.gz"), sitk.sitkFloat32)
    with pytest.raises(ConfigError, match="dose must be"):
        simulate_low_dose_image(ct, dose)


def test_manifest_symlink_inside_cohort_is_accepted(tmp_path):
    """Counterpart of symlink-outside: links that stay inside the cohort folder are fine."""
    root = tmp_path / "cohort"
    (root / "case0").mkdir(parents=True)
    for name in ("ct", "mask"):
        (root / "case0" / f"{name}.nii.gz").write_bytes(b"x")
    os.symlink(root / "case0" / "ct.nii.gz", root / "case0" / "ct_link.nii.gz")
    (root / "manifest.csv").write_text("\n".join([HEADER, ROW.replace("case0/ct.nii.gz", "case0/ct_link.nii.gz")]))
    assert read_manifest(root / "manifest.csv")[0].ct == (root / "case0" / "ct.nii.gz").resolve()
