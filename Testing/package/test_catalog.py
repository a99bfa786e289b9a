"""Model catalogue: shipped list, user registrations, import, removal, validation."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from reactkd.errors import ModelPackageError
from reactkd.package import catalog as catalog_module
from reactkd.package import model_package
from reactkd.package.catalog import ModelCatalog, default_user_file
from reactkd.package.schema import SCHEMA_FILE, schema_problems, validate_catalog_document
from reactkd.vocabulary import CLASS_NAMES

REPO = Path(__file__).resolve().parents[2]


#: The smallest valid safetensors file: an 8-byte header length, then an empty JSON header.
WEIGHTS = struct.pack("<Q", 2) + b"{}"
SHA = hashlib.sha256(WEIGHTS).hexdigest()


def make_package(folder: Path, name: str = "student", version: str = "1.2", modalities=("ct",),
                 weights: bool = True, **extra) -> Path:
    """A sealed package that reactkd.package.model_package.verify_package accepts (no network inside)."""
    folder.mkdir(parents=True, exist_ok=True)
    if weights:
        (folder / "model.safetensors").write_bytes(WEIGHTS)
    meta = {key: {} for key in model_package.REQUIRED_KEYS}
    meta.update(name=name, version=version, architecture={"type": "student"}, sha256=SHA,
                input_modalities=list(modalities), class_names=list(CLASS_NAMES), **extra)
    meta[model_package.METADATA_CHECKSUM] = model_package.metadata_digest(meta)
    (folder / "metadata.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(autouse=True)
def verifier(monkeypatch):
    """Spy on the catalogue's package verification (the real verify_package, calls recorded)."""
    calls: list[Path] = []

    def spy(model_dir):
        calls.append(Path(model_dir))
        return model_package.verify_package(model_dir)

    monkeypatch.setattr(catalog_module, "verify_package", spy)
    return calls


@pytest.fixture
def shipped(tmp_path):
    """A shipped list (like reactkd/data/Models.json) naming one present and one absent package."""
    data = tmp_path / "module/reactkd/data"
    make_package(data / "models/demo", name="demo-internal", version="3.0", modalities=("ct", "pet_fdg"))
    doc = {"schema_version": 1, "models": [
        {"name": "demo", "path": "models/demo", "description": "demo model"},
        {"name": "absent", "path": "models/absent", "version": "0.1"}]}
    (data / "Models.json").write_text(json.dumps(doc))
    return data / "Models.json"


@pytest.fixture
def cat(tmp_path, shipped):
    return ModelCatalog(user_file=tmp_path / "home/models.json", shipped_file=shipped)


def test_shipped_paths_resolve_against_the_list_folder_and_read_metadata(cat, shipped):
    demo, absent = cat.entries()
    assert demo.path == (shipped.parent / "models/demo").resolve()
    assert (demo.name, demo.version, demo.sha256, demo.source) == ("demo", "3.0", SHA, "shipped")
    assert demo.input_modalities == ("ct", "pet_fdg") and demo.description == "demo model"
    assert demo.available and not absent.available and absent.version == "0.1"
    assert cat.default_entry() == demo


def test_register_persists_entry_from_metadata(cat, tmp_path, verifier):
    pkg = make_package(tmp_path / "runs/s1", name="my-student", version="0.3", modalities=("ct", "pet_act"))
    entry = cat.register(pkg)
    assert verifier == [pkg.resolve()]
    assert (entry.name, entry.version, entry.source, entry.path) == ("my-student", "0.3", "registered",
                                                                      pkg.resolve())
    reread = ModelCatalog(user_file=cat.user_file, shipped_file=cat.shipped_file)
    assert reread.get("my-student") == entry and reread.entries()[-1] == entry
    assert json.loads(cat.user_file.read_text())["models"][0]["path"] == str(pkg.resolve())


@pytest.mark.parametrize("broken", ["no_weights", "no_metadata", "no_name", "bad_json", "not_a_dir"])
def test_register_refuses_incomplete_packages(cat, tmp_path, broken):
    pkg = make_package(tmp_path / "pkg", weights=broken != "no_weights")
    if broken == "no_metadata":
        (pkg / "metadata.json").unlink()
    elif broken == "no_name":
        (pkg / "metadata.json").write_text(json.dumps({"version": "1"}))
    elif broken == "bad_json":
        (pkg / "metadata.json").write_text("{not json")
    elif broken == "not_a_dir":
        pkg = tmp_path / "missing"
    with pytest.raises(ModelPackageError):
        cat.register(pkg)
    assert not cat.user_file.exists()


def test_verifier_rejection_blocks_registration(cat, tmp_path, monkeypatch):
    def reject(model_dir):
        raise ModelPackageError("checksum mismatch")

    monkeypatch.setattr(catalog_module, "verify_package", reject)
    with pytest.raises(ModelPackageError, match="checksum"):
        cat.register(make_package(tmp_path / "pkg"))
    assert cat.user_entries() == []


def test_reregistering_replaces_and_name_clashes_get_suffix(cat, tmp_path):
    first = make_package(tmp_path / "a", name="student", version="1")
    cat.register(first)
    make_package(first, name="student", version="2")
    assert cat.register(first).version == "2"
    second = cat.register(make_package(tmp_path / "b", name="student"))
    clash_with_shipped = cat.register(make_package(tmp_path / "c", name="demo"))
    assert [e.name for e in cat.user_entries()] == ["student", "student-2", "demo-2"]
    assert second.name == "student-2" and clash_with_shipped.name == "demo-2"
    assert cat.get("student").version == "2"


def test_registering_a_shipped_package_adds_nothing(cat, shipped):
    entry = cat.register(shipped.parent / "models/demo")
    assert entry.source == "shipped" and cat.user_entries() == []


def test_unknown_modality_is_refused_and_user_file_kept(cat, tmp_path):
    cat.register(make_package(tmp_path / "ok"))
    before = cat.user_file.read_text()
    with pytest.raises(ModelPackageError, match="modalit"):
        cat.register(make_package(tmp_path / "bad", name="bad", modalities=("mri",)))
    assert cat.user_file.read_text() == before


def test_import_copies_then_registers(cat, tmp_path):
    src = make_package(tmp_path / "downloads/pkg", name="shared model")
    dest_root = tmp_path / "store"
    first = cat.import_folder(src, dest_root)
    second = cat.import_folder(src, dest_root)
    assert first.source == "imported" and first.path.parent == dest_root.resolve()
    assert (first.path / "model.safetensors").read_bytes() == WEIGHTS
    assert first.path != second.path and second.name == "shared model-2"
    assert sorted(p.name for p in dest_root.iterdir()) == sorted([first.path.name, second.path.name])
    assert (src / "model.safetensors").exists()


def test_import_defaults_to_user_models_folder(cat, tmp_path):
    entry = cat.import_folder(make_package(tmp_path / "pkg", name="x"))
    assert entry.path.parent == cat.models_dir.resolve()


def test_remove_by_name_or_path_only_user_entries(cat, tmp_path):
    registered = cat.register(make_package(tmp_path / "r", name="r"))
    imported = cat.import_folder(make_package(tmp_path / "i", name="i"))  # into the models folder: deletable
    with pytest.raises(ModelPackageError, match="shipped"):
        cat.remove("demo")
    with pytest.raises(ModelPackageError, match="no user-registered"):
        cat.remove("nothing")
    assert cat.remove(str(tmp_path / "r")) == registered
    assert (tmp_path / "r/model.safetensors").exists()
    cat.remove("i", delete_files=True)
    assert not imported.path.exists() and cat.user_entries() == []


def test_get_unknown_lists_known_names(cat):
    with pytest.raises(ModelPackageError, match="known: demo, absent"):
        cat.get("nope")


@pytest.mark.parametrize("document", [
    {"models": []},
    {"schema_version": 2, "models": []},
    {"schema_version": 1, "models": [{"name": "x"}]},
    {"schema_version": 1, "models": [{"name": "x", "path": "p", "sha256": "XYZ"}]},
    {"schema_version": 1, "models": [{"name": "x", "path": "p", "input_modalities": ["mri"]}]},
    {"schema_version": 1, "models": [{"name": "x", "path": "p", "colour": "red"}]},
    {"schema_version": 1, "models": [{"name": "", "path": "p", "source": "stolen"}]},
    {"schema_version": True, "models": []},
])
def test_fallback_schema_checker_rejects_bad_documents(document):
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema_problems(document, schema, schema)
    with pytest.raises(ModelPackageError):
        validate_catalog_document(document)


def test_corrupt_user_file_is_reported(cat):
    cat.user_file.parent.mkdir(parents=True)
    cat.user_file.write_text('{"schema_version": 1, "models": [{"name": "x", "path": "/p"}]}')
    with pytest.raises(ModelPackageError, match="source"):
        cat.entries()
    cat.user_file.write_text("{")
    with pytest.raises(ModelPackageError, match="cannot read"):
        cat.entries()


def test_shipped_models_json_is_valid_and_points_inside_the_package():
    document = json.loads((REPO / "REACTKD/reactkd/data/Models.json").read_text())
    schema = json.loads((REPO / "REACTKD/reactkd/data/Models.schema.json").read_text())
    assert schema_problems(document, schema, schema) == []
    for item in document["models"]:
        assert item["path"].startswith("models/") and not Path(item["path"]).is_absolute()
        assert (REPO / "REACTKD/reactkd/data" / item["path"] / "metadata.json").is_file()


def test_default_user_file_honours_reactkd_home(monkeypatch, tmp_path):
    monkeypatch.setenv("REACTKD_HOME", str(tmp_path))
    assert default_user_file() == tmp_path / "models.json"
    monkeypatch.delenv("REACTKD_HOME")
    assert default_user_file() == Path.home() / ".reactkd/models.json"


def test_catalog_import_stays_light():
    code = "import sys, reactkd.package.catalog; bad = {'torch', 'monai', 'safetensors'} & set(sys.modules); print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "set()"


def test_real_package_verification_accepts_intact_and_refuses_tampered_weights(cat, tmp_path, monkeypatch):
    """A package saved by numpy's safetensors writer: unsealed metadata refused, tampered weights refused."""
    packaging = model_package
    numpy = pytest.importorskip("numpy")
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    pkg = tmp_path / "real"
    pkg.mkdir()
    safetensors_numpy.save_file({"w": numpy.arange(6, dtype=numpy.float32)}, str(pkg / "model.safetensors"))
    meta = {key: {} for key in packaging.REQUIRED_KEYS}
    meta.update(name="real", version="1", class_names=list(CLASS_NAMES), input_modalities=["ct"],
                sha256=packaging.sha256_of(pkg / "model.safetensors"))
    (pkg / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelPackageError, match="reactkd seal"):  # unsealed metadata is refused
        cat.register(pkg)
    packaging.seal_package(pkg)
    assert cat.register(pkg).sha256 == meta["sha256"]
    tampered = pkg / "model.safetensors"
    tampered.write_bytes(tampered.read_bytes()[:-4] + b"\x00\x00\x80\x7f")
    with pytest.raises(ModelPackageError, match="checksum"):
        cat.register(pkg)


def test_shipped_catalogue_says_what_each_package_reads():
    """Models.json (what the module shows before a package is read) agrees with each package's metadata."""
    document = json.loads((REPO / "REACTKD/reactkd/data/Models.json").read_text())
    for item in document["models"]:
        metadata = json.loads((REPO / "REACTKD/reactkd/data" / item["path"] / "metadata.json").read_text())
        assert item["input_modalities"] == metadata["input_modalities"], item["name"]
        if metadata["input_modalities"] == ["ct"]:
            assert "PET channels" not in item["description"], item["name"]


@pytest.mark.parametrize("text, message", [
    ('{"schema_version": ' + "9" * 4500 + ', "models": []}', "Exceeds the limit"),
    ("[" * 150_000 + "]" * 150_000, "nested too deeply"),
    ('{"schema_version": 1, "models": [' + '{"a": ' * 70 + "0" + "}" * 70 + "]}", "nested deeper than"),
], ids=["integer-of-4500-digits", "nesting-150000-deep", "nesting-71-deep"])
def test_hostile_user_catalogue_is_one_line_and_leaves_the_shipped_models(cat, text, message):
    cat.user_file.parent.mkdir(parents=True)
    cat.user_file.write_text(text)
    with pytest.raises(ModelPackageError, match=f"cannot read model catalogue .*{message}") as error:
        cat.entries()
    assert "\n" not in str(error.value)
    # What the Slicer module falls back to at start-up (REACTKDLib.widget.populateModels).
    assert [e.name for e in cat.shipped_entries()] == ["demo", "absent"]
