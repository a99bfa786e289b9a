"""Catalogue of model packages the REACTKD module can use: the ones shipped with the extension
(listed in ``reactkd/data/Models.json``) and the ones a user registered or imported (listed in a
user JSON file, by default ``$REACTKD_HOME/models.json`` or ``~/.reactkd/models.json``).

No Slicer, no Qt and no heavy imports here: the GUI builds its model selector from this at start-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reactkd.atomic import folder_lock, write_text_atomic
from reactkd.errors import ModelPackageError
from reactkd.json_files import read_json
from reactkd.package.model_package import verify_package
from reactkd.package.schema import validate_catalog_document
from reactkd.vocabulary import DATA_DIR, METADATA_FILE, MODALITIES, WEIGHTS_FILE

CATALOG_SCHEMA_VERSION = 1

SHIPPED_FILE = DATA_DIR / "Models.json"
#: Where shipped packages live inside the core package (used when a default Models.json is absent).
PACKAGED_MODELS_DIR = DATA_DIR / "models"


@dataclass(frozen=True)
class CatalogEntry:
    """One model package known to the catalogue; `path` is absolute."""

    name: str
    version: str
    path: Path
    sha256: str
    source: str
    description: str = ""
    input_modalities: tuple[str, ...] = field(default=())

    @property
    def available(self) -> bool:
        """True when the package folder holds its weights and metadata (shipped models may be absent)."""
        return (self.path / WEIGHTS_FILE).is_file() and (self.path / METADATA_FILE).is_file()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "path": str(self.path), "sha256": self.sha256,
                "source": self.source, "description": self.description,
                "input_modalities": list(self.input_modalities)}


def default_user_file() -> Path:
    """``$REACTKD_HOME/models.json`` when REACTKD_HOME is set, else ``~/.reactkd/models.json``."""
    home = os.environ.get("REACTKD_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".reactkd") / "models.json"


def read_package_metadata(model_dir: str | os.PathLike) -> dict[str, Any]:
    """Verify the package in `model_dir` (files, checksums, no pickles: :func:`verify_package`) and return its
    metadata; a package without a model name is refused too."""
    metadata = verify_package(model_dir)
    if not str(metadata.get("name") or "").strip():
        raise ModelPackageError(f"{Path(model_dir) / METADATA_FILE} has no model name")
    return metadata


def _entry_from_metadata(model_dir: Path, metadata: dict[str, Any], source: str, name: str | None = None,
                         description: str | None = None) -> CatalogEntry:
    modalities = tuple(metadata.get("input_modalities") or ())
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise ModelPackageError(f"{model_dir / METADATA_FILE}: unknown input modalities {unknown}; "
                                f"expected some of {list(MODALITIES)}")
    if description is None:
        description = str(metadata.get("description") or metadata.get("intended_use") or "")
    return CatalogEntry(name=name or str(metadata["name"]).strip(), version=str(metadata.get("version", "")),
                        path=model_dir.resolve(), sha256=str(metadata.get("sha256", "")).lower(),
                        source=source, description=description, input_modalities=modalities)


class ModelCatalog:
    """Shipped plus user-registered model packages.

    Args:
        user_file: JSON file of user registrations (default: :func:`default_user_file`).
        shipped_file: list of shipped models; its relative paths are relative to the folder holding the
            file (``reactkd/data/Models.json`` -> ``reactkd/data/``).
            By default the extension's own list, or (pip install, no list) the packages found under
            ``reactkd/data/models``.
    """

    def __init__(self, user_file: str | os.PathLike | None = None,
                 shipped_file: str | os.PathLike | None = None) -> None:
        self.user_file = Path(user_file) if user_file is not None else default_user_file()
        self._shipped_is_default = shipped_file is None
        self.shipped_file = Path(shipped_file) if shipped_file is not None else SHIPPED_FILE

    @property
    def models_dir(self) -> Path:
        """Folder that :meth:`import_folder` copies packages into by default."""
        return self.user_file.parent / "models"

    # ----------------------------------------------------------------------------------------- queries
    def entries(self) -> list[CatalogEntry]:
        """All entries: shipped first (in list order), then user entries (in registration order)."""
        return self.shipped_entries() + self.user_entries()

    def shipped_entries(self) -> list[CatalogEntry]:
        if not self.shipped_file.is_file():
            return self._discover_packaged() if self._shipped_is_default else []
        document = _load_document(self.shipped_file)
        root = self.shipped_file.resolve().parent
        entries = []
        for item in document["models"]:
            path = Path(item["path"])
            entry = _entry_from_item(item, path if path.is_absolute() else root / path, "shipped")
            entries.append(_refresh_from_package(entry))
        return entries

    def user_entries(self) -> list[CatalogEntry]:
        if not self.user_file.is_file():
            return []
        document = _load_document(self.user_file)
        entries = []
        for item in document["models"]:
            if item.get("source") not in ("registered", "imported"):
                raise ModelPackageError(f"{self.user_file}: entry {item['name']!r} needs source "
                                        "'registered' or 'imported'")
            entries.append(_entry_from_item(item, Path(item["path"]), item["source"]))
        return entries

    def get(self, name: str) -> CatalogEntry:
        """The entry called `name` (exact match)."""
        entries = self.entries()
        for entry in entries:
            if entry.name == name:
                return entry
        known = ", ".join(e.name for e in entries) or "none"
        raise ModelPackageError(f"no model named {name!r} in the catalogue (known: {known})")

    def default_entry(self) -> CatalogEntry | None:
        """The first available shipped model, else the first available model, else None."""
        available = [e for e in self.entries() if e.available]
        shipped = [e for e in available if e.source == "shipped"]
        return (shipped or available or [None])[0]

    # ------------------------------------------------------------------------------------------ writes
    def register(self, model_dir: str | os.PathLike, source: str = "registered") -> CatalogEntry:
        """Add (or refresh) the package in `model_dir`; returns its entry.

        Registering the same folder again replaces its entry. A name already used by another package gets a
        numeric suffix (``name-2``) so that :meth:`get` stays unambiguous. Registering a shipped package
        returns the shipped entry unchanged.
        """
        if source not in ("registered", "imported"):
            raise ValueError(f"source must be 'registered' or 'imported', not {source!r}")
        model_dir = Path(model_dir).expanduser().resolve()
        metadata = read_package_metadata(model_dir)
        for entry in self.shipped_entries():
            if entry.path == model_dir:
                return entry
        with self._locked():
            user = self.user_entries()
            others = [e for e in user if e.path != model_dir]
            taken = {e.name for e in others} | {e.name for e in self.shipped_entries()}
            entry = _entry_from_metadata(model_dir, metadata, source, name=_unique_name(
                str(metadata["name"]).strip(), taken))
            replaced = [entry if e.path == model_dir else e for e in user]
            self._write_user(replaced if len(replaced) > len(others) else user + [entry])
        return entry

    def import_folder(self, src_dir: str | os.PathLike,
                      dest_root: str | os.PathLike | None = None) -> CatalogEntry:
        """Copy the package in `src_dir` into `dest_root` (default :attr:`models_dir`) and register the
        copy with source ``imported``. The copy appears under its final name only once complete."""
        src_dir = Path(src_dir).expanduser().resolve()
        metadata = read_package_metadata(src_dir)
        dest_root = Path(dest_root) if dest_root is not None else self.models_dir
        dest_root.mkdir(parents=True, exist_ok=True)
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", str(metadata["name"])).strip("._") or "model"
        dest = dest_root / base
        suffix = 1
        while dest.exists():
            suffix += 1
            dest = dest_root / f"{base}-{suffix}"
        staging = dest_root / f".{base}.importing-{uuid.uuid4().hex[:8]}"
        try:
            shutil.copytree(src_dir, staging)
            os.rename(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        try:
            return self.register(dest, source="imported")
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise

    def remove(self, name_or_path: str | os.PathLike, delete_files: bool = False) -> CatalogEntry:
        """Remove a user entry, found by name or by folder; shipped models cannot be removed.

        With `delete_files`, an imported package's copy is deleted too (never a registered folder: it
        belongs to the user). Only a folder inside :attr:`models_dir` is ever deleted: an entry of models.json
        naming anything else (a symlink, or a folder outside it, by path or through a link) is refused and
        nothing changes, since models.json is a file anyone with the user's rights may have edited."""
        key = str(name_or_path)
        as_path = Path(key).expanduser().resolve()

        def matches(entry: CatalogEntry) -> bool:
            return entry.name == key or entry.path == as_path

        if any(matches(e) for e in self.shipped_entries()):
            raise ModelPackageError(f"{key!r} is shipped with the extension and cannot be removed")
        with self._locked():
            user = self.user_entries()
            removed = [e for e in user if matches(e)]
            if not removed:
                raise ModelPackageError(f"no user-registered model {key!r} in the catalogue")
            doomed = [self._deletable(e.path) for e in removed if delete_files and e.source == "imported"]
            self._write_user([e for e in user if not matches(e)])
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)  # never follows a link below `path`
        return removed[0]

    def _deletable(self, path: Path) -> Path:
        """`path` resolved, when it is a real folder (not a link) strictly inside the models folder; else refused."""
        models = self.models_dir.expanduser().resolve()
        absolute = Path(os.path.abspath(path.expanduser()))
        resolved = absolute.resolve()
        if absolute.is_symlink() or resolved == models or not resolved.is_relative_to(models):
            raise ModelPackageError(f"{path} lies outside the models folder {models} (or is a link); refusing to "
                                    "delete it: the entry and its files are kept (remove the entry without "
                                    "deleting files, and delete the folder yourself if you mean to)")
        return resolved

    # --------------------------------------------------------------------------------------- internals
    def _write_user(self, entries: list[CatalogEntry]) -> None:
        document = {"schema_version": CATALOG_SCHEMA_VERSION, "models": [e.to_json() for e in entries]}
        validate_catalog_document(document, self.user_file)
        write_text_atomic(self.user_file, json.dumps(document, indent=2) + "\n")

    def _discover_packaged(self) -> list[CatalogEntry]:
        entries = []
        for meta in sorted(PACKAGED_MODELS_DIR.glob(f"*/{METADATA_FILE}")):
            with contextlib.suppress(ModelPackageError, OSError):
                entries.append(_entry_from_metadata(meta.parent, read_json(meta, ModelPackageError),
                                                    "shipped"))
        return entries

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        """Serialise read-modify-write of the user file between processes (GUI and a training child); the
        lock goes away with the process that holds it, however it ends."""
        return folder_lock(self.user_file.parent)


def _unique_name(base: str, taken: set[str]) -> str:
    name, suffix = base, 1
    while name in taken:
        suffix += 1
        name = f"{base}-{suffix}"
    return name


def _entry_from_item(item: dict[str, Any], path: Path, source: str) -> CatalogEntry:
    return CatalogEntry(name=item["name"], version=str(item.get("version", "")), path=path.resolve(),
                        sha256=item.get("sha256", ""), source=source,
                        description=item.get("description", ""),
                        input_modalities=tuple(item.get("input_modalities", ())))


def _refresh_from_package(entry: CatalogEntry) -> CatalogEntry:
    """Take version, checksum and modalities of a shipped model from its metadata.json when present, so
    Models.json need not be edited each time the demo model is retrained."""
    try:
        metadata = read_json(entry.path / METADATA_FILE, ModelPackageError)
        fresh = _entry_from_metadata(entry.path, metadata, "shipped", name=entry.name,
                                     description=entry.description or None)
    except (OSError, ValueError, KeyError, TypeError, ModelPackageError):
        return entry
    return fresh


# ---------------------------------------------------------------------------------------- validation
def _load_document(path: Path) -> dict[str, Any]:
    try:
        document = read_json(path, ModelPackageError)
    except ModelPackageError as exc:
        raise ModelPackageError(f"cannot read model catalogue {exc}") from None
    validate_catalog_document(document, path)
    return document
