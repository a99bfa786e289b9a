"""The example in reactkd.training.config's docstring is what the README points users to: it must state the
real defaults of the config, the preprocessing and the student."""

import inspect
import textwrap

import yaml

from reactkd.models.student import Student
from reactkd.models.teachers import DoseAwareTeacher, StructureFunctionTeacher
from reactkd.preprocessing import PreprocessConfig
from reactkd.training import config as config_module


def _documented() -> dict:
    doc = config_module.__doc__
    example = doc[doc.index("Example"):].split("\n", 2)[2]
    return yaml.safe_load(textwrap.dedent(example))


def test_documented_defaults_are_the_defaults(tmp_path):
    documented = _documented()
    path = tmp_path / "documented.yaml"
    path.write_text(yaml.safe_dump(documented))

    loaded = config_module.config_to_dict(config_module.load_config(path))
    defaults = config_module.config_to_dict(config_module.load_config())
    # The empty sections default inside PreprocessConfig and the networks: the next test checks those.
    sections = ("preprocessing", "student", "teacher")
    assert {k: v for k, v in loaded.items() if k not in sections} == \
        {k: v for k, v in defaults.items() if k not in sections}
    fields = {f.name for f in config_module.dataclasses.fields(config_module.TrainConfig)}
    assert set(documented) == fields  # every key is documented


def test_documented_preprocessing_and_student_defaults_match_the_code():
    documented = _documented()
    assert PreprocessConfig.from_dict(documented["preprocessing"]) == PreprocessConfig()
    assert set(documented["preprocessing"]) == set(PreprocessConfig().to_dict())
    for network, section in ((Student, "student"), (StructureFunctionTeacher, "teacher"), (DoseAwareTeacher, "teacher")):
        signature = inspect.signature(network)
        for key, value in documented[section].items():
            default = signature.parameters[key].default
            assert (list(default) if isinstance(value, list) else default) == value, (network.__name__, key)
