"""JSON files that evaluation reads back from run and model folders. A broken one (cut short, edited, copied
from elsewhere) is refused with an error that names the file, says what is wrong and what to do, instead of a
traceback half-way through a run; what a run writes for itself is written atomically, so a kill never leaves
half a file behind."""
from __future__ import annotations

import json
import os
import types
import typing
from pathlib import Path
from typing import Any

# field -> what it must hold: a type hint (str, float | None, list[str], dict[str, str]) or, for an object whose
# own fields matter, a nested Shape. Fields that are absent are not checked; `required` lists those that must be.
Shape = dict[str, Any]

_JSON_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "list",
               type(None): "null"}


class BrokenFileError(ValueError):
    """A file of a run or model folder that cannot be used; the message names it, what is wrong and what to do."""


def read_json_object(path: Path, shape: Shape | None = None, fix: str = "") -> dict:
    """The JSON object in `path`, the fields of `shape` checked; `fix` says what to do when it is broken."""
    try:
        data = json.loads(Path(path).read_bytes())
    except ValueError as e:  # not JSON, or not UTF-8 text
        raise BrokenFileError(f"{path} is not JSON ({e}){_then(fix)}") from None
    check_shape(data, shape or {}, str(path), fix)
    return data


def check_shape(data: Any, shape: Shape, where: str, fix: str = "", required: tuple[str, ...] = ()) -> None:
    """Refuse `data` unless it is an object whose fields fit `shape`, naming `where` and every field that does
    not."""
    if not isinstance(data, dict):
        raise BrokenFileError(f"{where} holds the {_json_name(type(data))} {_show(data)}, not a JSON object"
                              f"{_then(fix)}")
    missing = [key for key in required if key not in data]
    problems = ([f"missing {', '.join(missing)}"] if missing else []) + _misfits(data, shape)
    if problems:
        raise BrokenFileError(f"{where}: {'; '.join(problems)}{_then(fix)}")


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


def _misfits(data: dict, shape: Shape, prefix: str = "") -> list[str]:
    found = []
    for key, hint in shape.items():
        if key not in data:
            continue
        value, name = data[key], prefix + key
        if isinstance(hint, dict) and isinstance(value, dict):
            found += _misfits(value, hint, f"{name}.")
        elif not _fits(value, dict if isinstance(hint, dict) else hint):
            found.append(f"{name} is {_show(value)}, expected {_json_name(dict if isinstance(hint, dict) else hint)}")
    return found


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(v, args[1]) for v in value.values())
    if hint is Any:
        return True
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _json_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_json_name(arg) for arg in args)
    if origin in (list, dict):
        return f"{_JSON_NAMES[origin]} of {_json_name(args[-1])}s"
    return _JSON_NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def _show(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def _then(fix: str) -> str:
    return f": {fix}" if fix else ""
