"""The one dose simulation of training and evaluation: degrade each native CT, then preprocess.

`dose_ct_channels` is what both call: the low-dose simulator runs on the case's own native grid (its noise
depends on the pixel size and on what the projections see: the whole body cross-section), only on the slices
the model grid will cover, and each degraded CT goes through the same `preprocess_case` as inference. The
dose teacher trains on exactly what `reactkd evaluate --doses` shows it.

For training, `load_dose_cache` computes every case's degraded CT channels at the configured doses once and
keeps them in `.reactkd-cache/doses-<key>.npz` (NumPy, no pickle) with a JSON sidecar recording what they
were made from and their sha256: a corrupted file is rebuilt, a file made for other doses or another
simulator is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from reactkd.atomic import atomic_path, write_text_atomic
from reactkd.cohort.cache import read_record
from reactkd.cohort.manifest import CaseRecord
from reactkd.errors import ConfigError, ReactKDError
from reactkd.images.geometry import Geometry
from reactkd.preprocessing import PreprocessConfig, check_mask, liver_box, preprocess_case

CACHE_FORMAT = 1


def check_doses(doses: Sequence[float]) -> tuple[float, ...]:
    """The doses as floats in (0, 1], in the given order; ConfigError for an empty list or a bad value."""
    from reactkd.ldct.simulator import check_dose

    values = tuple(check_dose(dose) for dose in doses)
    if not values:
        raise ConfigError("the dose list is empty")
    return values


def model_slab(ct: sitk.Image, mask: sitk.Image, margin_mm: float) -> tuple[sitk.Image, sitk.Image]:
    """The CT and mask cut to the slices the preprocessing crop keeps (whole slices in plane, physical
    placement kept): `preprocess_case` gives the same model grid on them, and simulating them costs a
    fraction of the whole CT."""
    z0, z1 = liver_box(check_mask(ct, mask), Geometry.of(ct).spacing, margin_mm)[2]
    return ct[:, :, z0:z1], mask[:, :, z0:z1]


def case_dose_seed(case_id: str, dose: float, seed: int = 0) -> int:
    """The noise seed of one case at one dose: the same in every run, other for every case and dose."""
    digest = hashlib.sha256(f"{seed}:{case_id}:{float(dose)!r}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


def simulator_settings() -> dict:
    """What the degraded CTs depend on besides the cohort and the doses (recorded in every dose cache)."""
    from reactkd.ldct import simulator

    return {"simulator_version": simulator.SIMULATOR_VERSION, "i0": simulator.DEFAULT_I0,
            "window": simulator.DEFAULT_WINDOW, "electronic_noise": 0.0, "reconstruction": "difference"}


def dose_ct_channels(ct: sitk.Image, mask: sitk.Image, doses: Sequence[float], config: PreprocessConfig,
                     case_id: str, seed: int = 0, device: str = "cpu") -> np.ndarray:
    """(len(doses), D, H, W) float32: the model's CT channel of this case at each dose.

    Each dose below 1 is simulated on the native CT (only the slices the model grid covers, whole slices in
    plane), as a scan at that dose would look (`input_is_full_dose`: the case's own noise is kept and the
    missing variance added); dose 1 is the CT itself. Then `preprocess_case`, as at inference.
    """
    from reactkd.ldct.simulator import simulate_low_dose_image

    doses = check_doses(doses)
    ct_slab, mask_slab = model_slab(ct, mask, config.margin_mm)
    out = []
    for dose in doses:
        image = ct_slab if dose >= 1 else simulate_low_dose_image(
            ct_slab, dose, seed=case_dose_seed(case_id, dose, seed), device=device, input_is_full_dose=True)
        out.append(preprocess_case(image, mask_slab, config=config).images[0])
    return np.stack(out)


def _cache_key(cohort_key: str, doses: tuple[float, ...], seed: int) -> tuple[str, dict]:
    description = {"format": CACHE_FORMAT, "cohort": cohort_key, "doses": list(doses), "seed": seed,
                   **simulator_settings()}
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:20]
    return digest, description


def _array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _read(npz: Path, sidecar: Path, description: dict, n_cases: int) -> np.ndarray | None:
    if not npz.is_file() or not sidecar.is_file():
        return None
    try:
        recorded = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        recorded = None
    if isinstance(recorded, dict) and {k: recorded.get(k) for k in description} != description:
        made = {k: recorded.get(k) for k in ("doses", "simulator_version")}
        raise ConfigError(f"dose cache {npz} was made for {made}, not for doses {description['doses']} with "
                          f"simulator version {description['simulator_version']}; delete it to rebuild it")
    try:
        with np.load(npz, allow_pickle=False) as data:
            ct = data["ct"]
        if not isinstance(recorded, dict) or ct.shape[:2] != (n_cases, len(description["doses"])) \
                or _array_sha256(ct) != recorded.get("sha256"):
            raise ValueError("checksum or shape mismatch")
        return ct
    except (OSError, ValueError, KeyError, EOFError) as exc:
        logging.getLogger(__name__).warning("dose cache %s is unusable (%s); rebuilding it", npz, exc)
        npz.unlink(missing_ok=True)
        return None


def load_dose_cache(records: list[CaseRecord], config: PreprocessConfig, doses: Sequence[float], cohort_key: str,
                    cache_dir: Path | None, seed: int = 0, device: str = "cpu",
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(N, len(doses), D, H, W) float32 CT channels of every record at every dose, from the cache when it
    holds them (built and written otherwise). `cohort_key` identifies the cohort content (`CohortTensors.key`)."""
    doses = check_doses(doses)
    key, description = _cache_key(cohort_key, doses, int(seed))
    npz = sidecar = None
    if cache_dir is not None:
        npz, sidecar = Path(cache_dir) / f"doses-{key}.npz", Path(cache_dir) / f"doses-{key}.json"
        cached = _read(npz, sidecar, description, len(records))
        if cached is not None:
            return cached
    parts = []
    for index, record in enumerate(records):
        ct, mask, _, _ = read_record(record, with_pet=False)
        try:
            parts.append(dose_ct_channels(ct, mask, doses, config, record.case_id, seed, device))
        except ReactKDError as exc:
            raise type(exc)(f"{record.case_id}: {exc}") from None
        if progress:
            progress(index + 1, len(records))
    channels = np.stack(parts)
    if npz is not None:
        npz.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(npz) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, ct=channels)
        write_text_atomic(sidecar, json.dumps({**description, "sha256": _array_sha256(channels)}, indent=1))
    return channels
