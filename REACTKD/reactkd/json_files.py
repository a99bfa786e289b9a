"""The one reader of JSON files that users hand to REACT-KD (model metadata, the model catalogue, result.json
read back): size, encoding, syntax, number and nesting limits all end in one `ReactKDError` line, never in a
traceback from deep inside the standard library."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from reactkd.errors import ReactKDError

#: JSON files REACT-KD reads are a few kB; anything far larger is not one of them.
MAX_JSON_BYTES = 4 * 1024 * 1024
#: Deeper than any file REACT-KD writes (metadata: 4 levels); recursive checkers downstream stay safe.
MAX_JSON_DEPTH = 64


def parse_json(text: str, where: str | os.PathLike, error: type[ReactKDError] = ReactKDError,
               max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse `text` (the content of `where`); refuse, as `error`, what json.loads would raise on (syntax,
    integers past Python's 4300-digit conversion limit: ValueError; deep nesting: RecursionError) and
    documents nested deeper than `max_depth`."""
    try:
        document = json.loads(text)
    except RecursionError:
        raise error(f"{where}: invalid JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, and the int-string conversion limit
        raise error(f"{where}: invalid JSON ({str(exc).splitlines()[0][:200]})") from None
    if _depth(document, max_depth) > max_depth:
        raise error(f"{where}: invalid JSON (nested deeper than {max_depth} levels)")
    return document


def read_json(path: str | os.PathLike, error: type[ReactKDError] = ReactKDError,
              max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Read and parse the JSON file `path` with the limits of `parse_json`, refusing missing, unreadable,
    non-UTF-8 or implausibly large files (checked before reading) as `error`.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> (folder / "deep.json").write_text("[" * 70 + "]" * 70)
        140
        >>> read_json(folder / "deep.json")
        Traceback (most recent call last):
        reactkd.errors.ReactKDError: ...deep.json: invalid JSON (nested deeper than 64 levels)
    """
    path = Path(path)
    try:
        if path.stat().st_size > max_bytes:
            raise error(f"{path}: file is implausibly large for a JSON file ({path.stat().st_size} bytes)")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: invalid JSON (not UTF-8: {exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_json(text, path, error, max_depth)


def _depth(document: Any, limit: int) -> int:
    """Nesting depth of a parsed document (a scalar is 0), walked without recursion and stopping past `limit`."""
    deepest, stack = 0, [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((item, depth) for item in (value.values() if isinstance(value, dict) else value))
    return deepest
