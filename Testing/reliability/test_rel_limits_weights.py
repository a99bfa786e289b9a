"""Issue 25, class 7: weights that cannot mean anything (integer or bool tensors, other shapes) are refused when
the package loads; a tie between all grades is never reported as a grade."""

import numpy as np
import pytest
from rel_support import assert_one_error_line, run_cli
from safetensors.numpy import load_file, save_file
from test_rel_hostile_files import clone, set_metadata

from reactkd.errors import ModelPackageError
from reactkd.package.model_package import load_package, sha256_of
from reactkd.vocabulary import WEIGHTS_FILE


def _reseal_with(package, change):
    state = {name: change(name, value) for name, value in load_file(str(package / WEIGHTS_FILE)).items()}
    save_file(state, str(package / WEIGHTS_FILE))
    set_metadata(package, sha256=sha256_of(package / WEIGHTS_FILE))


@pytest.mark.parametrize("dtype", [np.int8, np.bool_, np.int32, np.uint8])
def test_integer_or_bool_weights_are_refused_at_load(tiny_package, tmp_path, dtype):
    package = clone(tiny_package, tmp_path / "pkg")
    _reseal_with(package, lambda name, value: value.astype(dtype) if value.dtype.kind == "f" else value)
    with pytest.raises(ModelPackageError, match=r"weights do not fit the architecture \(.* is (int|bool|uint)"):
        load_package(package)


def test_one_integer_tensor_among_float_ones_is_refused(tiny_package, tmp_path):
    package = clone(tiny_package, tmp_path / "pkg")
    first = [True]

    def change(name, value):
        if value.dtype.kind == "f" and value.ndim > 1 and first[0]:
            first[0] = False
            return value.astype(np.int16)
        return value

    _reseal_with(package, change)
    with pytest.raises(ModelPackageError, match="is int16, the architecture needs float32"):
        load_package(package)


def test_weights_of_another_shape_are_refused_in_one_line(tiny_package, tmp_path):
    package = clone(tiny_package, tmp_path / "pkg")
    _reseal_with(package, lambda name, value: np.concatenate([value, value]) if value.ndim > 1 else value)
    with pytest.raises(ModelPackageError, match=r"has shape \(\d+, .*the architecture needs") as error:
        load_package(package)
    assert "\n" not in str(error.value)


def test_float64_weights_still_load(tiny_package, tmp_path):
    package = clone(tiny_package, tmp_path / "pkg")
    _reseal_with(package, lambda name, value: value.astype(np.float64) if value.dtype.kind == "f" else value)
    assert load_package(package).model is not None


def test_a_tie_between_all_grades_is_refused_not_graded(tiny_package, tmp_path, case_dir, capsys):
    package = clone(tiny_package, tmp_path / "pkg")
    _reseal_with(package, lambda name, value: np.zeros_like(value) if value.dtype.kind == "f" else value)
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", "--ct", str(case_dir / "ct.nii.gz"), "--mask", str(case_dir / "mask.nii.gz"),
                            "--model", str(package), "--out", str(out), "--device", "cpu", "--no-render"], capsys)
    line = assert_one_error_line(code, err)
    assert "same probability" in line and "no grade" in line
    assert not (out / "result.json").exists()
