"""config.toml sections -> dataclasses, overridable from the command line.

A dataclass field whose type is itself a dataclass is a sub-table: `[training.lora]` in the file,
`lora.rank=16` as an override, `--lora.rank 16` as a flag (see `add_config_flags`). Every command builds its
parser with `command_parser`, so each takes both spellings and explains each key in config.toml's words.
"""
from __future__ import annotations

import argparse
import copy
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


def _strip_optional(hint):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def _convert(raw, annotation, key: str):
    """A value from the command line (str) or from TOML, checked against the field's type."""
    hint, optional = _strip_optional(annotation)
    if raw is None and optional:
        return None
    if isinstance(raw, str) and optional and raw.lower() in ("none", "null", ""):
        return None
    try:
        if typing.get_origin(hint) is tuple:  # tuple[str, ...]: comma-separated on the command line
            items = [s.strip() for s in raw.split(",") if s.strip()] if isinstance(raw, str) else list(raw)
            return tuple(typing.get_args(hint)[0](x) for x in items)
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return str(raw).lower() in ("true", "1", "yes")
        if hint is int and isinstance(raw, float) and not raw.is_integer():
            raise ValueError(raw)
        if hint is int and isinstance(raw, bool):
            raise ValueError(raw)
        if hint is str and not isinstance(raw, str):  # a TOML number or list where text belongs
            raise ValueError(raw)
        return hint(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{key}={raw!r} is not a valid {getattr(hint, '__name__', hint)}") from None


def _fields(cls) -> dict[str, tuple[dataclasses.Field, typing.Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def _is_section(hint) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def config_keys(cls, prefix: str = "") -> dict[str, typing.Any]:
    """Every settable key of `cls` with its type, sub-tables as dotted names (`lora.rank`)."""
    keys = {}
    for name, (_, hint) in _fields(cls).items():
        if _is_section(hint):
            keys.update(config_keys(hint, f"{prefix}{name}."))
        else:
            keys[prefix + name] = hint
    return keys


def flatten(values: dict, prefix: str = "") -> dict:
    """Nested tables as dotted keys: {"stream": {"chunk_size": 25}} -> {"stream.chunk_size": 25}."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _build(cls, values: dict, where: str):
    known = _fields(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"{where} has unknown key {key!r}; known: {', '.join(known)}")
        hint = known[key][1]
        if _is_section(hint):
            if not isinstance(value, dict):
                raise ValueError(f"{where}.{key} must be a table")
            kwargs[key] = _build(hint, value, f"{where}.{key}")
        else:
            kwargs[key] = _convert(value, hint, f"{where}.{key}")
    return cls(**kwargs)


def load_config(cls, section: str, path: str | Path | None = None, overrides: list[str] = ()):
    """Defaults of `cls` <- [section] of config.toml <- `key=value` overrides. Unknown keys are errors."""
    values: dict = {}
    path = Path(path) if path else default_config_path()
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        values = tomllib.loads(path.read_text()).get(section, {})
    return config_from_dict(cls, values, overrides, f"[{section}]")


def config_from_dict(cls, values: dict, overrides: list[str] = (), where: str = "config"):
    """`cls` from nested `values` (as a TOML table or `dataclasses.asdict` gives) plus `key=value` overrides."""
    values = copy.deepcopy(values)
    keys = config_keys(cls)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.replace("-", "_")
        if not sep or key not in keys:
            raise ValueError(f"override {item!r}: expected key=value with key one of {', '.join(keys)}")
        *tables, leaf = key.split(".")
        node = values
        for table in tables:
            node = node.setdefault(table, {})
        node[leaf] = raw
    return _build(cls, values, where)


def _comment_of(line: str) -> str | None:
    """The text after the first `#` outside a quoted string, or None."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c == "#":
            return line[i + 1:].strip()
    return None


def config_comments(section: str, path: str | Path | None = None) -> dict[str, str]:
    """The comment documenting each key of [section] and its sub-tables in config.toml, by dotted key.

    A key's comment is the one on its line plus indented comment-only lines right below it, so the file
    stays the one place where settings are explained and `--help` shows the same words. A key without one
    takes its table's (the comment on the `[table]` line).
    """
    path = Path(path) if path else PROJECT_ROOT / "config.toml"
    if not path.is_file():
        return {}
    comments: dict[str, str] = {}
    prefix: str | None = None
    last: str | None = None
    table_comment = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            table = stripped[1:stripped.index("]")].strip()
            prefix = "" if table == section else (table[len(section) + 1:] + "." if table.startswith(section + ".")
                                                  else None)
            table_comment = _comment_of(stripped[stripped.index("]"):]) or ""
            last = None
        elif stripped.startswith("#") and line[:1].isspace() and last is not None:
            comments[last] = f"{comments[last]} {stripped[1:].strip()}".strip()
        elif "=" in stripped and not stripped.startswith("#") and prefix is not None:
            last = prefix + stripped.split("=", 1)[0].strip()
            comments[last] = _comment_of(stripped.split("=", 1)[1]) or table_comment
        else:
            last = None
    return comments


def add_config_flags(parser: argparse.ArgumentParser, cls, section: str | None = None) -> None:
    """One `--key` flag per config key (`--audio-dir`, `--lora.rank`); unset flags leave the file's value.

    With `section`, each flag's help is the key's comment in config.toml plus its value there (the default)."""
    comments = config_comments(section) if section else {}
    defaults: dict = {}
    if section:
        try:
            defaults = dataclasses.asdict(load_config(cls, section))
        except (ValueError, FileNotFoundError):
            defaults = {}
    for key, hint in config_keys(cls).items():
        flag = "--" + key.replace("_", "-")
        names = [flag] if flag == "--" + key else [flag, "--" + key]
        base, _ = _strip_optional(hint)
        metavar = "A,B,..." if typing.get_origin(base) is tuple else getattr(base, "__name__", "VALUE").upper()
        extra = dict(nargs="?", const="true") if base is bool else {}  # a bare --flag means true
        value = defaults
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        shown = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
        text = comments.get(key) or f"config key {key}"
        help_text = f"{text} (default: {shown!r})" if section else text
        parser.add_argument(*names, dest=f"cfg:{key}", default=None, metavar=metavar,
                            help=help_text.replace("%", "%%"), **extra)


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The `key=value` overrides given as flags made by `add_config_flags`."""
    return [f"{dest[4:]}={value}" for dest, value in vars(args).items()
            if dest.startswith("cfg:") and value is not None]


class CommandParser(argparse.ArgumentParser):
    """`key=value` words may sit anywhere among the flags (argparse alone takes them in one run only)."""

    def parse_args(self, args=None, namespace=None):
        return self.parse_intermixed_args(args, namespace)


def command_parser(prog: str, cls, section: str, description: str, **kwargs) -> CommandParser:
    """The command line of every command: `--config`, one `--key value` flag per key of `cls` and the same keys
    as `key=value` words, explained by [section]'s comments in config.toml. The command adds its own flags."""
    p = CommandParser(prog=prog, description=description, **kwargs)
    p.add_argument("--config", help="config file (default: ./config.toml, else the project's)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help=f"any [{section}] key below, as the flags (a flag given too wins)")
    add_config_flags(p, cls, section)
    return p


def command_overrides(args: argparse.Namespace) -> list[str]:
    """Every setting given on the command line as `key=value`: the words, then the flags (which win)."""
    return [*getattr(args, "overrides", []), *flag_overrides(args)]


def parse_command(parser: argparse.ArgumentParser, argv: list[str] | None, cls, section: str):
    """(flags, config): `cls` from config.toml's [section] (or --config's), then the command line's settings.
    Raises ValueError (a bad key or value) or FileNotFoundError (no such --config) for the command to report."""
    args = parser.parse_args(argv)
    return args, load_config(cls, section, args.config, command_overrides(args))
