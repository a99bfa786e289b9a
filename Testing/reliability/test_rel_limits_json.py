"""Issue 25, class 8: JSON that json.loads cannot take (an integer past Python's digit limit, deep nesting) and
an output folder removed during the writes end in one `error:` line, never a traceback."""

import json
import shutil

import pytest
from rel_support import assert_one_error_line, files_under, run_cli
from test_rel_hostile_files import clone

from reactkd.errors import ModelPackageError, ReactKDError
from reactkd.json_files import read_json
from reactkd.vocabulary import METADATA_FILE

HOSTILE = {
    "integer-of-6000-digits": ('{"version": ' + "7" * 6000 + "}", "invalid JSON (Exceeds the limit"),
    "nesting-250000-deep": ("[" * 250_000 + "]" * 250_000, "nested too deeply"),
    "nesting-90-deep": ('{"a": ' * 90 + "1" + "}" * 90, "nested deeper than 64 levels"),
    "not-utf8": ("\udcff", "not UTF-8"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_read_json_refuses_with_the_callers_error(tmp_path, name):
    text, message = HOSTILE[name]
    path = tmp_path / "doc.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ModelPackageError) as error:
        read_json(path, ModelPackageError)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_read_json_refuses_a_large_file_before_reading_it(tmp_path):
    path = tmp_path / "big.json"
    with open(path, "wb") as handle:
        handle.truncate(5 * 1024 * 1024)
    with pytest.raises(ReactKDError, match="implausibly large"):
        read_json(path)


def _metadata_with_huge_integer(package):
    text = (package / METADATA_FILE).read_text()
    (package / METADATA_FILE).write_text(text.replace('"version":', '"seed_digits": ' + "3" * 5200 + ', "version":', 1))


@pytest.mark.parametrize("command", ["classify", "seal"])
def test_a_huge_integer_in_metadata_is_one_error_line(tiny_package, case_dir, tmp_path, capsys, command):
    package = clone(tiny_package, tmp_path / "pkg")
    _metadata_with_huge_integer(package)
    before = (package / METADATA_FILE).read_bytes()
    argv = ["seal", "--model", str(package)] if command == "seal" else [
        "classify", "--ct", str(case_dir / "ct.nii.gz"), "--mask", str(case_dir / "mask.nii.gz"), "--model",
        str(package), "--out", str(tmp_path / "out"), "--device", "cpu", "--no-render"]
    code, _, err = run_cli(argv, capsys)
    assert "invalid JSON (Exceeds the limit" in assert_one_error_line(code, err)
    assert (package / METADATA_FILE).read_bytes() == before


@pytest.mark.parametrize("moment", ["before-the-maps", "before-result-json", "before-installing"])
def test_out_removed_while_writing_is_one_error_line(tiny_package, case_dir, tmp_path, capsys, monkeypatch, moment):
    from reactkd.inference import outputs

    out = tmp_path / "run" / "out"
    target = {"before-the-maps": "write_image", "before-result-json": "write_result_json",
              "before-installing": "_install_set"}[moment]
    original = getattr(outputs, target)

    def remove_then_write(*args, **kwargs):
        shutil.rmtree(out, ignore_errors=True)
        return original(*args, **kwargs)

    monkeypatch.setattr(outputs, target, remove_then_write)
    code, _, err = run_cli(["classify", "--ct", str(case_dir / "ct.nii.gz"), "--mask", str(case_dir / "mask.nii.gz"),
                            "--model", str(tiny_package), "--out", str(out), "--device", "cpu", "--no-render"], capsys)
    assert "output folder was removed while the results were being written" in assert_one_error_line(code, err)
    assert not out.exists() or not any(name.startswith(".reactkd-out-") or name == "result.json"
                                       for name in files_under(out) | {p.name for p in out.iterdir()})


def test_result_json_read_back_with_deep_nesting_is_a_reactkd_error(tmp_path):
    from reactkd.inference.outputs import read_outputs

    (tmp_path / "result.json").write_text("[" * 200_000 + "]" * 200_000)
    (tmp_path / "graph.json").write_text(json.dumps({"nodes": []}))
    with pytest.raises(ReactKDError, match="unreadable .*nested too deeply"):
        read_outputs(tmp_path)
