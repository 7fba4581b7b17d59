"""JSON files that evaluation reads back from run and model folders. A broken one (cut short, edited, copied
from elsewhere) is refused with an error that names the file, says what is wrong and what to do, instead of a
traceback half-way through a run; what a run writes for itself is written atomically, so a kill never leaves
half a file behind. Pydantic checks what a file holds against a type: a dataclass, or `json_object`'s fields."""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

_KINDS = {list: "list", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
_adapter = functools.cache(TypeAdapter)


class BrokenFileError(ValueError):
    """A file of a run or model folder that cannot be used; the message names it, what is wrong and what to do."""


def json_object(name: str, **fields: Any) -> type:
    """The type of a JSON object whose `fields`, where present, hold the given types; other fields are kept."""
    return with_config(ConfigDict(extra="allow"))(TypedDict(name, fields, total=False))


def read_json_object(path: Path, shape: Any = dict, fix: str = "") -> dict:
    """The JSON object in `path`, checked against `shape`; `fix` says what to do when it is broken. It is returned
    as written (pydantic's copy puts declared fields first, and the reports show the fields in their order)."""
    text = Path(path).read_bytes()
    parse_json(text, shape, str(path), fix)
    return json.loads(text)


def parse_json(text: str | bytes, shape: Any, where: str, fix: str = "") -> Any:
    """`text` parsed as `shape`, strictly (the string "0.1" is no number); else BrokenFileError naming `where`."""
    try:
        return _adapter(shape).validate_json(text, strict=True)
    except ValidationError as e:
        raise BrokenFileError(f"{where}{_what_is_wrong(e)}{': ' + fix if fix else ''}") from None


def _what_is_wrong(e: ValidationError) -> str:
    errors = e.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return f" is not JSON ({first['ctx']['error']})"
    if not first["loc"]:  # the file as a whole is not an object
        return f" holds the {_KINDS.get(type(first['input']), 'value')} {_show(first['input'])}, not a JSON object"
    where = [".".join(map(str, err["loc"])) for err in errors]
    missing = [at for at, err in zip(where, errors) if err["type"] == "missing"]
    problems = [f"{at}: {err['msg']}, got {_show(err['input'])}" for at, err in zip(where, errors)
                if err["type"] != "missing"]
    return ": " + "; ".join(([f"missing {', '.join(missing)}"] if missing else []) + problems)


def write_json(path: Path, data: Any) -> Path:
    """Write `data` through a temporary file in the same folder and rename it over `path`: a kill leaves the old
    file or the new one, never half of one. The temporary name starts with a dot (it is no file of the run)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _show(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "..."
