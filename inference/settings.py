"""config.toml sections -> dataclasses, with `key=value` overrides from the command line."""
from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def default_config_path() -> Path | None:
    for candidate in (Path.cwd() / "config.toml", PROJECT_ROOT / "config.toml"):
        if candidate.is_file():
            return candidate
    return None


def _convert(raw: str, annotation, key: str):
    hint = annotation
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null", ""):
            return None
        hint = next(a for a in args if a is not type(None))
    try:
        if hint is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        return hint(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{key}={raw!r} is not a valid {getattr(hint, '__name__', hint)}") from None


def load_config(cls, section: str, path: str | Path | None = None, overrides: list[str] = ()):
    """Defaults of `cls` <- [section] of config.toml <- `key=value` overrides. Unknown keys are errors."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict = {}
    path = Path(path) if path else default_config_path()
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        table = tomllib.loads(path.read_text()).get(section, {})
        for key, value in table.items():
            if key not in known:
                raise ValueError(f"{path}: [{section}] has unknown key {key!r}; known: {', '.join(known)}")
            values[key] = value
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or key not in known:
            raise ValueError(f"override {item!r}: expected key=value with key one of {', '.join(known)}")
        values[key] = _convert(raw, hints[key], key)
    return cls(**values)
