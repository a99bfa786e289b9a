"""Model packages: a folder with `model.safetensors` (weights only) and `metadata.json`.

Loading checks the SHA-256 of the weights against the metadata before parsing them, refuses anything that is
not a safetensors file (a pickle is never opened), and bounds the header size so a hostile file cannot make
the parser allocate gigabytes. A second checksum, `metadata_sha256`, covers every metadata field (class names
and their order, preprocessing, graph settings, calibration, the weights' checksum): whatever changes the
answer is sealed when the package is saved (`save_package`, or `reactkd seal` after a deliberate edit).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from reactkd.atomic import atomic_path, write_text_atomic
from reactkd.errors import ConfigError, ModelPackageError, ReactKDError
from reactkd.json_files import read_json
from reactkd.vocabulary import METADATA_FILE, WEIGHTS_FILE

MAX_HEADER_BYTES = 16 * 1024 * 1024
REQUIRED_KEYS = ("name", "version", "architecture", "architecture_args", "class_names", "input_modalities",
                 "preprocessing", "sha256")
METADATA_CHECKSUM = "metadata_sha256"


@dataclass
class ModelPackage:
    """A verified model package: the rebuilt network in eval mode plus its metadata."""

    path: Path
    metadata: dict
    model: object  # torch.nn.Module

    @property
    def name(self) -> str:
        return self.metadata["name"]


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def metadata_digest(metadata: dict) -> str:
    """SHA-256 of the metadata's canonical JSON (sorted keys, no spaces), its own checksum field left out."""
    body = {key: value for key, value in metadata.items() if key != METADATA_CHECKSUM}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def check_safetensors_header(path: Path) -> None:
    """Refuse files that are not safetensors (pickles, zips, truncated files, absurd headers)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        raise ModelPackageError(f"{path}: not a safetensors file (too short)")
    (header_len,) = struct.unpack("<Q", head[:8])
    # A safetensors file is an 8-byte little-endian header length then a JSON object; pickles (0x80 ...)
    # and zip archives (PK...) fail this test. Nothing here ever unpickles.
    if head[8:9] != b"{":
        raise ModelPackageError(f"{path}: not a safetensors file (refusing to open it; pickles are never loaded)")
    if header_len > MAX_HEADER_BYTES or header_len + 8 > size:
        raise ModelPackageError(f"{path}: safetensors header of {header_len} bytes is invalid or too large")


def read_metadata(model_dir: str | os.PathLike) -> dict:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelPackageError(f"{model_dir}: model package folder not found")
    meta_path = model_dir / METADATA_FILE
    if not meta_path.is_file() or not (model_dir / WEIGHTS_FILE).is_file():
        raise ModelPackageError(f"{model_dir}: a model package needs {WEIGHTS_FILE} and {METADATA_FILE}")
    if meta_path.stat().st_size > 4 * 1024 * 1024:
        raise ModelPackageError(f"{meta_path}: metadata file is implausibly large")
    metadata = read_json(meta_path, ModelPackageError)
    if not isinstance(metadata, dict):
        raise ModelPackageError(f"{meta_path}: metadata must be a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in metadata]
    if missing:
        raise ModelPackageError(f"{meta_path}: missing key(s) {', '.join(missing)}")
    return metadata


def verify_package(model_dir: str | os.PathLike) -> dict:
    """Check files, header and checksum; return the metadata. Raises ModelPackageError on any mismatch."""
    model_dir = Path(model_dir)
    metadata = read_metadata(model_dir)
    sealed = metadata.get(METADATA_CHECKSUM)
    if sealed is None:
        raise ModelPackageError(f"{model_dir / METADATA_FILE}: no {METADATA_CHECKSUM} (a package saved before "
                                f"metadata checksums); check its metadata, then seal it: reactkd seal --model {model_dir}")
    if sealed != metadata_digest(metadata):
        raise ModelPackageError(f"{model_dir / METADATA_FILE}: metadata was changed after the package was saved "
                                "(its checksum does not match); refusing a model whose class names or settings may "
                                "have been altered")
    return _verify_weights(model_dir, metadata)


def _verify_weights(model_dir: Path, metadata: dict) -> dict:
    weights = model_dir / WEIGHTS_FILE
    if weights.is_symlink() or not weights.resolve().is_relative_to(model_dir.resolve()):
        raise ModelPackageError(f"{weights}: weights must be a regular file inside the package folder")
    check_safetensors_header(weights)
    actual = sha256_of(weights)
    if actual != metadata["sha256"]:
        raise ModelPackageError(f"{weights}: checksum mismatch (expected {str(metadata['sha256'])[:12]}..., "
                                f"got {actual[:12]}...); the file was modified or corrupted")
    return metadata


def save_package(model, out_dir: str | os.PathLike, metadata: dict) -> Path:
    """Write weights and metadata atomically; fills in `sha256`. Metadata must hold the REQUIRED_KEYS but sha256."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    metadata = {**metadata, "sha256": sha256_of(out_dir / WEIGHTS_FILE), "weights": WEIGHTS_FILE}
    missing = [k for k in REQUIRED_KEYS if k not in metadata]
    if missing:
        raise ModelPackageError(f"cannot save a model package without {', '.join(missing)}")
    _write_sealed(out_dir, metadata)
    return out_dir


def _write_sealed(out_dir: Path, metadata: dict) -> dict:
    metadata = {**metadata, METADATA_CHECKSUM: metadata_digest(metadata)}
    write_text_atomic(out_dir / METADATA_FILE, json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return metadata


def seal_package(model_dir: str | os.PathLike) -> dict:
    """Seal a package's current metadata with a new `metadata_sha256` (after a deliberate, reviewed edit, or for
    a package saved before metadata checksums). The weights must still match their checksum."""
    model_dir = Path(model_dir)
    metadata = read_metadata(model_dir)
    _verify_weights(model_dir, metadata)
    return _write_sealed(model_dir, metadata)


def metadata_problems(metadata: dict) -> list[str]:
    """What is wrong with the metadata's values (types and bounds), one message per problem; [] when fine.
    Architecture sizes are bounded when the network is built (`build_model`), preprocessing by
    `PreprocessConfig`."""
    from reactkd.graph.settings import RECORDED_LOSS_KEYS, GraphSettings
    from reactkd.losses import rgd_problems
    from reactkd.preprocessing import PreprocessConfig
    from reactkd.vocabulary import MODALITIES

    problems = []
    for key in ("name", "version", "architecture"):
        if not isinstance(metadata.get(key), str) or not metadata[key].strip():
            problems.append(f"{key} must be a non-empty text")
    modalities = metadata.get("input_modalities")
    if not isinstance(modalities, list) or not modalities or modalities[0] != "ct" \
            or not all(m in MODALITIES for m in modalities) or len(set(modalities)) != len(modalities):
        problems.append(f"input_modalities must list distinct modalities of {', '.join(MODALITIES)}, ct first")
    if not isinstance(metadata.get("architecture_args"), dict):
        problems.append("architecture_args must be a mapping")
    try:
        PreprocessConfig.from_dict(metadata.get("preprocessing"))
    except (TypeError, ValueError, ReactKDError) as exc:
        problems.append(f"invalid preprocessing settings in metadata ({exc})")
    # The graph settings (GraphSettings) and, recorded beside them, the RGD loss settings of the training.
    graph = metadata.get("graph", {})
    if not isinstance(graph, dict) or set(map(str, graph)) - {*GraphSettings.keys(), *RECORDED_LOSS_KEYS}:
        problems.append(f"graph must be a mapping of {', '.join((*GraphSettings.keys(), *RECORDED_LOSS_KEYS))}")
    else:
        problems += GraphSettings.problems({k: v for k, v in graph.items() if k not in RECORDED_LOSS_KEYS})
        problems += rgd_problems({k: v for k, v in graph.items() if k in RECORDED_LOSS_KEYS}, prefix="graph.")
    conformal = metadata.get("conformal")
    if conformal is not None and not (isinstance(conformal, dict) and "unavailable" in conformal):
        from reactkd.conformal import ConformalCalibration

        try:
            ConformalCalibration.from_dict(conformal, n_classes=len(metadata.get("class_names") or [0, 0, 0]))
        except (ValueError, ReactKDError) as exc:
            problems.append(f"invalid conformal calibration ({exc})")
    from reactkd.temperature import temperature_problems

    problems += temperature_problems(metadata.get("temperature"))
    if metadata.get("input_profile") is not None:
        from reactkd.ood import InputProfile

        try:
            InputProfile.from_dict(metadata["input_profile"])
        except ValueError as exc:
            problems.append(f"invalid input profile ({exc})")
    return problems


def load_package(model_dir: str | os.PathLike, device: str = "cpu") -> ModelPackage:
    """Verify and load a package; the network comes back in eval mode on `device`.

    Args:
        model_dir: folder holding model.safetensors and metadata.json.
        device: where the weights go ("cpu", "cuda", "cuda:1").

    Raises:
        ModelPackageError: missing files, a checksum mismatch, a pickle, unsealed or invalid metadata.

    Example:
        >>> from reactkd.vocabulary import DATA_DIR
        >>> package = load_package(DATA_DIR / "models" / "reactkd-demo-student")
        >>> package.name, package.metadata["input_modalities"], package.model.training
        ('reactkd-demo-student', ['ct'], False)
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from reactkd.models import build_model

    metadata = verify_package(model_dir)
    problems = metadata_problems(metadata)
    if problems:
        raise ModelPackageError(f"{model_dir}: invalid metadata: " + "; ".join(problems))
    arguments = metadata["architecture_args"]
    if isinstance(arguments, dict) and "head" not in arguments:
        # Packages made before the region head all ended in global pooling: load them as such.
        arguments = {**arguments, "head": "global"}
    try:
        model = build_model(metadata["architecture"], **arguments)
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise ModelPackageError(f"{model_dir}: cannot build architecture {metadata['architecture']!r} ({exc})") from None
    class_names = metadata["class_names"]
    if not isinstance(class_names, list) or len(class_names) != model.n_classes \
            or not all(isinstance(name, str) and name.strip() for name in class_names) \
            or len(set(class_names)) != len(class_names):
        raise ModelPackageError(f"{model_dir}: class_names must list {model.n_classes} different class names")
    try:
        state = load_file(str(Path(model_dir) / WEIGHTS_FILE), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ModelPackageError(f"{model_dir}: weights file is malformed ({(str(exc).splitlines() or [type(exc).__name__])[0]})") from None
    problems = weight_problems(state, model.state_dict())
    if problems:
        raise ModelPackageError(f"{model_dir}: weights do not fit the architecture ({'; '.join(problems[:3])}"
                                f"{'; ...' if len(problems) > 3 else ''})")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelPackageError(f"{model_dir}: weights do not fit the architecture ({str(exc).splitlines()[0]})") from None
    model.eval().to(device)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return ModelPackage(Path(model_dir), metadata, model)


def weight_problems(state: dict, expected: dict) -> list[str]:
    """How the loaded tensors `state` differ from the network's own `expected` state: missing or unexpected
    names, other shapes, and other dtype kinds. `load_state_dict` silently casts int8 or bool tensors to
    float (a resealed package of such weights then answers exactly 1/3 per class), so a floating-point
    tensor must come as floating point, and an integer buffer (BatchNorm's counter) as an integer."""
    problems = [f"missing tensor {name}" for name in expected if name not in state]
    problems += [f"unexpected tensor {name}" for name in state if name not in expected]
    for name, tensor in state.items():
        want = expected.get(name)
        if want is None:
            continue
        if tuple(tensor.shape) != tuple(want.shape):
            problems.append(f"{name} has shape {tuple(tensor.shape)}, the architecture needs {tuple(want.shape)}")
        elif not tensor.dtype.is_floating_point if want.dtype.is_floating_point else tensor.dtype != want.dtype:
            problems.append(f"{name} is {str(tensor.dtype).removeprefix('torch.')}, the architecture needs "
                            f"{str(want.dtype).removeprefix('torch.')}")
    return problems
