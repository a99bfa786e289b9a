"""The model catalogue's JSON Schema (``reactkd/data/Models.schema.json``) and its checker: ``jsonschema``
when installed (Slicer does not bundle it), else a small interpreter of the keywords that schema uses."""

from __future__ import annotations

import json
import os
import re
from typing import Any

from reactkd.errors import ModelPackageError
from reactkd.vocabulary import DATA_DIR

SCHEMA_FILE = DATA_DIR / "Models.schema.json"


def validate_catalog_document(document: Any, where: str | os.PathLike = "catalogue") -> None:
    """Check a catalogue document against ``Models.schema.json`` (with ``jsonschema`` when installed,
    else with a small checker of the keywords that schema uses); raise ModelPackageError if invalid."""
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    try:
        import jsonschema
    except ModuleNotFoundError:
        problems = schema_problems(document, schema, schema)
    else:
        validator = jsonschema.Draft7Validator(schema)
        problems = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                    for e in validator.iter_errors(document)]
    if problems:
        raise ModelPackageError(f"invalid model catalogue {where}: {'; '.join(problems[:5])}")


_JSON_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def schema_problems(value: Any, schema: dict[str, Any], root: dict[str, Any], at: str = "<root>") -> list[str]:
    """Problems of `value` against the JSON Schema subset Models.schema.json uses (type, const, enum,
    required, properties, additionalProperties, items, minLength, pattern, uniqueItems, $ref)."""
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return schema_problems(value, target, root, at)
    kind = schema.get("type")
    if kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{at}: expected an integer"]
    elif kind is not None and not isinstance(value, _JSON_TYPES[kind]):
        return [f"{at}: expected {kind}"]
    problems = []
    if "const" in schema and value != schema["const"]:
        problems.append(f"{at}: must be {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{at}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            problems.append(f"{at}: too short")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{at}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        problems += [f"{at}: missing {key!r}" for key in schema.get("required", ()) if key not in value]
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                problems += schema_problems(item, properties[key], root, f"{at}/{key}")
            elif schema.get("additionalProperties", True) is False:
                problems.append(f"{at}: unexpected key {key!r}")
    if isinstance(value, list):
        if "items" in schema:
            for index, item in enumerate(value):
                problems += schema_problems(item, schema["items"], root, f"{at}/{index}")
        if schema.get("uniqueItems") and len({json.dumps(v, sort_keys=True) for v in value}) < len(value):
            problems.append(f"{at}: items are not unique")
    return problems
