"""Hostile model packages and checkpoints: refused with ModelPackageError (ConfigError for checkpoints)
without executing anything. The pickle payload would create a marker file when unpickled; the marker must
never appear."""

from __future__ import annotations

import json
import pickle
import shutil
import struct
import sys
import time
from pathlib import Path

import pytest
from rel_support import assert_one_error_line, run_cli

from reactkd.errors import ConfigError, ModelPackageError
from reactkd.inference.classifier import Classifier
from reactkd.package.catalog import ModelCatalog
from reactkd.package.model_package import (
    METADATA_CHECKSUM,
    METADATA_FILE,
    WEIGHTS_FILE,
    load_package,
    metadata_digest,
    sha256_of,
    verify_package,
)


class Payload:
    """Unpickling this object calls open(marker, "w"): the marker file appears."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickle_payload(marker: Path) -> bytes:
    data = pickle.dumps({"weight": Payload(marker)}, protocol=4)
    # The payload is live: unpickling it really creates the marker (so the refusals below mean something).
    pickle.loads(data)["weight"].close()  # the unpickled value is the file object open() returned
    assert marker.exists()
    marker.unlink()
    return data


def clone(package: Path, folder: Path) -> Path:
    shutil.copytree(package, folder)
    return folder


def set_metadata(folder: Path, seal: bool = True, **changes) -> None:
    """Edit metadata.json; with `seal` its checksum is renewed (as `reactkd seal` would), so the checks behind
    the metadata checksum are what the test meets."""
    metadata = json.loads((folder / METADATA_FILE).read_text())
    metadata.update(changes)
    if seal:
        metadata[METADATA_CHECKSUM] = metadata_digest(metadata)
    (folder / METADATA_FILE).write_text(json.dumps(metadata))


def replace_weights(folder: Path, data: bytes, fix_checksum: bool = True) -> None:
    """Swap the weights; with fix_checksum the metadata's sha256 matches, so only the format checks stand."""
    (folder / WEIGHTS_FILE).write_bytes(data)
    if fix_checksum:
        set_metadata(folder, sha256=sha256_of(folder / WEIGHTS_FILE))


LOADERS = {
    "verify_package": verify_package,
    "load_package": load_package,
    "Classifier": lambda path: Classifier(path, device="cpu"),
    "catalog.register": None,  # needs a per-test catalogue file, see _load
}


def _load(loader: str, path: Path, tmp_path: Path):
    if loader == "catalog.register":
        return ModelCatalog(user_file=tmp_path / "home" / "models.json", shipped_file=tmp_path / "none.json").register(path)
    return LOADERS[loader](path)


@pytest.mark.parametrize("loader", list(LOADERS))
def test_pickle_saved_as_weights_is_never_unpickled(loader, tiny_package, tmp_path):
    marker = tmp_path / "marker"
    package = clone(tiny_package, tmp_path / "pkg")
    replace_weights(package, pickle_payload(marker))
    with pytest.raises(ModelPackageError, match="not a safetensors file"):
        _load(loader, package, tmp_path)
    assert not marker.exists()
    assert not (tmp_path / "home" / "models.json").exists()  # nothing registered


def test_torch_zip_checkpoint_as_weights_is_refused(tiny_package, tmp_path):
    import torch

    marker = tmp_path / "marker"
    package = clone(tiny_package, tmp_path / "pkg")
    torch.save({"weight": Payload(marker)}, str(package / WEIGHTS_FILE))
    set_metadata(package, sha256=sha256_of(package / WEIGHTS_FILE))
    with pytest.raises(ModelPackageError, match="not a safetensors file"):
        load_package(package)
    assert not marker.exists()


def test_pickle_bytes_inside_tensor_data_stay_bytes(tiny_package, tmp_path):
    """A well-formed safetensors whose tensor holds pickle bytes: parsed as numbers, never unpickled."""
    import torch
    from safetensors.torch import save_file

    marker = tmp_path / "marker"
    package = clone(tiny_package, tmp_path / "pkg")
    payload = torch.frombuffer(bytearray(pickle_payload(marker)), dtype=torch.uint8)
    save_file({"weight": payload}, str(package / WEIGHTS_FILE))
    set_metadata(package, sha256=sha256_of(package / WEIGHTS_FILE))
    with pytest.raises(ModelPackageError, match="weights do not fit the architecture"):
        load_package(package)
    assert not marker.exists()


def test_tampered_weights_fail_the_checksum(tiny_package, case_dir, tmp_path, capsys):
    package = clone(tiny_package, tmp_path / "pkg")
    data = bytearray((package / WEIGHTS_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit inside the tensor data
    replace_weights(package, bytes(data), fix_checksum=False)
    with pytest.raises(ModelPackageError, match="checksum mismatch"):
        load_package(package)
    code, _, err = run_cli(["classify", "--ct", str(case_dir / "ct.nii.gz"), "--mask", str(case_dir / "mask.nii.gz"),
                            "--model", str(package), "--out", str(tmp_path / "out"), "--device", "cpu"], capsys)
    assert "checksum mismatch" in assert_one_error_line(code, err)
    assert not (tmp_path / "out").exists()


class OpenRecorder:
    """Records every path opened from Python (audit hook) or handed to safetensors' loader."""

    hook_installed = False
    active: list[str] | None = None

    @classmethod
    def start(cls) -> list[str]:
        if not cls.hook_installed:
            sys.addaudithook(lambda event, args: cls.active is not None and event == "open"
                             and isinstance(args[0], (str, bytes, Path)) and cls.active.append(str(args[0])))
            cls.hook_installed = True
        cls.active = []
        return cls.active

    @classmethod
    def stop(cls) -> None:
        cls.active = None


def test_metadata_weights_key_pointing_outside_is_ignored(tiny_package, tmp_path, monkeypatch):
    import safetensors.torch

    marker = tmp_path / "marker"
    outside = tmp_path / "x"
    outside.write_bytes(pickle_payload(marker))
    package = clone(tiny_package, tmp_path / "deep" / "down" / "pkg")
    set_metadata(package, weights="../../../x")
    real_load = safetensors.torch.load_file
    loaded: list[str] = []
    monkeypatch.setattr(safetensors.torch, "load_file", lambda path, *a, **k: loaded.append(str(path)) or
                        real_load(path, *a, **k))
    opened = OpenRecorder.start()
    try:
        result = load_package(package)
    finally:
        OpenRecorder.stop()
    assert result.model is not None
    assert [Path(p).resolve() for p in loaded] == [(package / WEIGHTS_FILE).resolve()]
    assert any(Path(p).name == METADATA_FILE for p in opened)  # the recorder sees the loader's reads
    assert all(Path(p).resolve() != outside.resolve() for p in opened if p), opened
    assert not marker.exists()
    # Without its own weights file the package is refused, whatever the key says.
    (package / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelPackageError, match="needs model.safetensors"):
        load_package(package)


@pytest.mark.parametrize("header", [b"\x00" * 6 + b"\x00\x10", struct.pack("<Q", 2**62), struct.pack("<Q", 10**6)])
def test_huge_safetensors_header_length_is_refused_before_reading(header, tiny_package, tmp_path):
    package = clone(tiny_package, tmp_path / "pkg")
    replace_weights(package, header + b'{"a": 1}')
    start = time.perf_counter()
    with pytest.raises(ModelPackageError, match="header of .* bytes is invalid or too large"):
        load_package(package)
    assert time.perf_counter() - start < 2.0


def test_inconsistent_tensor_offsets_are_a_package_error(tiny_package, tmp_path):
    package = clone(tiny_package, tmp_path / "pkg")
    header = json.dumps({"w": {"dtype": "F32", "shape": [10**6], "data_offsets": [0, 4 * 10**6]}}).encode()
    replace_weights(package, struct.pack("<Q", len(header)) + header + b"\0" * 16)
    with pytest.raises(ModelPackageError, match="weights file is malformed"):
        load_package(package)


METADATA_CASES = {
    "not-json": (b"{name: model", "invalid JSON"),
    "not-utf8": (b"\xff\xfe\x00{", "invalid JSON"),
    "not-an-object": (b"[1, 2, 3]", "must be a JSON object"),
    "deeply-nested": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "missing-keys": (b'{"name": "x"}', "missing key"),
}


@pytest.mark.parametrize("case_id", list(METADATA_CASES))
def test_malformed_metadata_is_refused(case_id, tiny_package, tmp_path):
    package = clone(tiny_package, tmp_path / "pkg")
    data, pattern = METADATA_CASES[case_id]
    (package / METADATA_FILE).write_bytes(data)
    with pytest.raises(ModelPackageError, match=pattern):
        load_package(package)


def test_huge_metadata_is_refused_without_reading_it(tiny_package, tmp_path):
    package = clone(tiny_package, tmp_path / "pkg")
    with open(package / METADATA_FILE, "wb") as handle:
        handle.write(b"{")
        handle.truncate(64 * 1024 * 1024)  # sparse: 64 MiB on paper, nothing on disk
    with pytest.raises(ModelPackageError, match="implausibly large"):
        load_package(package)


METADATA_VALUE_CASES = {
    "unknown-architecture": ({"architecture": "os.system"}, "cannot build architecture 'os.system'"),
    "architecture-args-not-a-mapping": ({"architecture_args": [1, 2]}, "architecture_args must be a mapping"),
    # issue 15, class 6: types and bounds, and no huge allocation
    "init-filters-huge": ({"architecture_args": {"init_filters": 100000}}, "init_filters=100000 out of range"),
    "modalities-unknown": ({"input_modalities": ["ct", "mri"]}, "input_modalities must list distinct"),
    "modalities-not-a-list": ({"input_modalities": "ct"}, "input_modalities must list distinct"),
    "graph-wrong-type": ({"graph": {"max_tumours": "eight"}}, "graph.max_tumours must be a number"),
    "graph-unknown-key": ({"graph": {"rings": 2}}, "graph must be a mapping of"),
    "margin-nan": ({"preprocessing": {"grid": [16, 32, 32], "margin_mm": float("nan")}}, "margin_mm must be a number"),
    "percentiles-reversed": ({"preprocessing": {"grid": [16, 32, 32], "pet_percentiles": [99, 1]}},
                             "pet_percentiles .* low < high"),
    "window-not-numeric": ({"preprocessing": {"grid": [16, 32, 32], "ct_window": ["low", "high"]}}, "CT window"),
    "grid-400-million": ({"preprocessing": {"grid": [1000, 1000, 400]}}, "model grid .* 8-512"),
    "island-fraction-impossible": ({"preprocessing": {"grid": [16, 32, 32], "min_liver_island_fraction": 3}},
                                   "min_liver_island_fraction must lie in"),
    "architecture-args-unknown-key": ({"architecture_args": {"evil": 1}}, "cannot build architecture"),
    "class-names-wrong-count": ({"class_names": ["well"]}, "class_names must list 3"),
    "class-names-duplicated": ({"class_names": ["well", "well", "poor"]}, "class_names must list 3 different"),
    "preprocessing-garbage": ({"preprocessing": {"grid": "abc"}}, "invalid preprocessing settings"),
}


@pytest.mark.parametrize("case_id", list(METADATA_VALUE_CASES))
def test_metadata_values_are_checked(case_id, tiny_package, tmp_path):
    package = clone(tiny_package, tmp_path / "pkg")
    changes, pattern = METADATA_VALUE_CASES[case_id]
    set_metadata(package, **changes)
    with pytest.raises(ModelPackageError, match=pattern) as info:
        Classifier(package, device="cpu")
    assert "\n" not in str(info.value)


def test_symlinks_folder_accepted_weights_refused(tiny_package, tmp_path):
    """Decision: a package folder reached through a symlink is fine (the checks apply to its files); a weights
    file that is itself a symlink is refused, wherever it points."""
    link = tmp_path / "linked"
    link.symlink_to(tiny_package, target_is_directory=True)
    assert load_package(link).metadata["sha256"] == verify_package(tiny_package)["sha256"]
    for target in (tiny_package / WEIGHTS_FILE, tmp_path / "elsewhere.safetensors"):
        shutil.copy(tiny_package / WEIGHTS_FILE, tmp_path / "elsewhere.safetensors")
        package = tmp_path / f"pkg-{target.name}"
        package.mkdir()
        shutil.copy(tiny_package / METADATA_FILE, package / METADATA_FILE)
        (package / WEIGHTS_FILE).symlink_to(target)
        with pytest.raises(ModelPackageError, match="regular file inside the package folder"):
            load_package(package)


def test_pickle_as_training_checkpoint_is_never_unpickled(tmp_path):
    import torch

    from reactkd.training.checkpoint import INFO_FILE, STATE_FILE, load_checkpoint

    marker = tmp_path / "marker"
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / STATE_FILE).write_bytes(pickle_payload(marker))
    (folder / INFO_FILE).write_text("{}")
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="checkpoint is unreadable"):
        load_checkpoint(folder, model, torch.optim.SGD(model.parameters(), lr=0.1), None)
    assert not marker.exists()


# ---------------------------------------------------------------- metadata checksum, non-finite outputs (issue 15.5)
@pytest.mark.parametrize("changes", [{"class_names": ["poor", "moderate", "well"]}, {"name": "someone else's"},
                                     {"preprocessing": {"grid": [8, 8, 8]}}, {"calibration": {"temperature": 9}}])
def test_any_metadata_change_after_saving_is_refused(changes, tiny_package, tmp_path, capsys):
    """Reordering class_names would flip the reported grade while the weights' checksum still matches."""
    package = clone(tiny_package, tmp_path / "pkg")
    set_metadata(package, seal=False, **changes)
    for loader in LOADERS:
        with pytest.raises(ModelPackageError, match="metadata was changed after the package was saved"):
            _load(loader, package, tmp_path)
    assert not (tmp_path / "home" / "models.json").exists()


def test_unsealed_package_says_how_to_seal_and_sealing_restores_it(tiny_package, tmp_path, capsys):
    from reactkd.cli.main import main

    package = clone(tiny_package, tmp_path / "pkg")
    metadata = json.loads((package / METADATA_FILE).read_text())
    del metadata[METADATA_CHECKSUM]
    (package / METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(ModelPackageError, match=f"reactkd seal --model {package}"):
        verify_package(package)
    assert main(["seal", "--model", str(package)]) == 0 and "sealed" in capsys.readouterr().out
    assert verify_package(package)["metadata_sha256"] == metadata_digest(metadata)
    replace_weights(package, (tiny_package / WEIGHTS_FILE).read_bytes()[:-8] + bytes(8), fix_checksum=False)
    assert main(["seal", "--model", str(package)]) == 2  # sealing never blesses weights that changed
    assert "checksum mismatch" in capsys.readouterr().err


def test_non_finite_weights_behind_a_matching_checksum_give_no_grade(tiny_package, tmp_path, capsys):
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from reactkd.cli.main import main
    from reactkd.images.writers import write_image
    from synthetic_images import make_case

    package = clone(tiny_package, tmp_path / "pkg")
    state = load_file(str(package / WEIGHTS_FILE))
    state = {name: np.full_like(value, np.nan) if value.dtype.kind == "f" else value for name, value in state.items()}
    save_file(state, str(package / WEIGHTS_FILE))
    set_metadata(package, sha256=sha256_of(package / WEIGHTS_FILE))
    ct, mask, _ = make_case()
    write_image(ct, tmp_path / "ct.nrrd")
    write_image(mask, tmp_path / "mask.nrrd")
    out = tmp_path / "out"
    code = main(["classify", "--ct", str(tmp_path / "ct.nrrd"), "--mask", str(tmp_path / "mask.nrrd"),
                 "--model", str(package), "--out", str(out), "--device", "cpu", "--no-render"])
    assert code == 2 and "non-finite outputs" in capsys.readouterr().err
    assert not (out / "result.json").exists()
