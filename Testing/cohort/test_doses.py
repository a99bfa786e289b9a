"""The one dose simulation: degrade the native CT, then preprocess; the training cache and evaluation share it."""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest

from reactkd.cli.main import main
from reactkd.cohort import doses as dose_module
from reactkd.cohort.cache import read_record
from reactkd.cohort.doses import case_dose_seed, check_doses, dose_ct_channels, load_dose_cache
from reactkd.cohort.manifest import read_manifest
from reactkd.errors import ConfigError
from reactkd.preprocessing import PreprocessConfig, preprocess_case

CONFIG = PreprocessConfig(grid=(16, 32, 32))


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("doses")
    assert main(["synth", "--out", str(root), "--cases", "3", "--size", "clinical", "--seed", "2"]) == 0
    return read_manifest(root / "manifest.csv")


def test_full_dose_channel_is_the_preprocessed_ct_and_lower_doses_add_noise(records):
    ct, mask, _, _ = read_record(records[0], with_pet=False)
    channels = dose_ct_channels(ct, mask, (1.0, 0.25, 0.05), CONFIG, records[0].case_id)
    # the slab cut before simulating leaves the model grid exactly as inference makes it
    np.testing.assert_array_equal(channels[0], preprocess_case(ct, mask, config=CONFIG).images[0])
    noise = [float(np.std(channels[k] - channels[0])) for k in (1, 2)]
    assert 0 < noise[0] < noise[1]
    np.testing.assert_array_equal(channels, dose_ct_channels(ct, mask, (1.0, 0.25, 0.05), CONFIG,
                                                             records[0].case_id))
    assert case_dose_seed("a", 0.25) != case_dose_seed("b", 0.25) != case_dose_seed("a", 0.1)


@pytest.mark.parametrize("bad", [(), (0.0,), (1.5,), (-0.1,), ("x",)])
def test_bad_doses_are_refused(bad):
    with pytest.raises(ConfigError):
        check_doses(bad)


def test_the_cache_is_built_once_checked_and_refused_when_made_for_other_doses(records, tmp_path, caplog):
    built = load_dose_cache(records, CONFIG, (1.0, 0.5), "cohortkey", tmp_path)
    assert built.shape == (3, 2, 16, 32, 32)
    [npz], [sidecar] = tmp_path.glob("doses-*.npz"), tmp_path.glob("doses-*.json")
    with mock.patch.object(dose_module, "dose_ct_channels", side_effect=AssertionError("recomputed")):
        np.testing.assert_array_equal(load_dose_cache(records, CONFIG, (1.0, 0.5), "cohortkey", tmp_path), built)
    # other doses or another cohort: another cache file, not a stale one
    other = load_dose_cache(records[:1], CONFIG, (0.25,), "cohortkey", tmp_path)
    assert other.shape == (1, 1, 16, 32, 32) and len(list(tmp_path.glob("doses-*.npz"))) == 2
    # a corrupted array is noticed by its checksum and rebuilt
    data = dict(np.load(npz))
    data["ct"][0, 1] += 1
    np.savez(npz, **data)
    np.testing.assert_array_equal(load_dose_cache(records, CONFIG, (1.0, 0.5), "cohortkey", tmp_path), built)
    assert "unusable" in caplog.text
    # a file recorded as made for other doses or another simulator is refused, and left as it is
    recorded = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**recorded, "simulator_version": 0}))
    with pytest.raises(ConfigError, match="simulator version"):
        load_dose_cache(records, CONFIG, (1.0, 0.5), "cohortkey", tmp_path)
    assert npz.exists()


def test_evaluate_refuses_bad_doses_in_one_line(records, capsys, tmp_path):
    for text in ("0", "", "0.5,2"):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(["evaluate", "--manifest", str(records[0].ct.parents[1] / "manifest.csv"), "--model", "x",
                  "--out", str(tmp_path / "e"), "--doses", text])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and not (tmp_path / "e").exists()
