"""JSON from a client, parsed so that every malformed body is a 400 naming the problem, never a crash.

`json.loads` alone lets through what fails later with a 500: bytes that are not UTF-8 (`UnicodeDecodeError`), deep
nesting (`RecursionError` in the parser or in validation), a number of thousands of digits (Python's int-string
limit, a `ValueError`), a lone surrogate escape (`"\\ud800"`, which no tokenizer or log can encode).
"""
from __future__ import annotations

import json
import sys

from .errors import ApiError

MAX_DEPTH = 8  # our requests are flat objects: anything deeper is not one of them


def read_json(data: bytes | str, what: str = "the body") -> dict:
    """`data` as a JSON object, or an ApiError(400) saying what is wrong with it."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ApiError(400, f"{what} is not UTF-8 (byte {data[e.start]:#04x} at offset {e.start}); JSON is sent "
                                "as UTF-8") from None
    try:
        value = json.loads(data)
    except json.JSONDecodeError as e:
        raise ApiError(400, f"{what} is not JSON: {e}") from None
    except RecursionError:
        raise ApiError(400, f"{what} is nested too deeply (at most {MAX_DEPTH} levels)") from None
    except ValueError:  # Python's int-string limit (4300 digits): no other ValueError comes from a str
        raise ApiError(400, f"{what} holds a number of over {sys.get_int_max_str_digits()} digits") from None
    if not isinstance(value, dict):
        raise ApiError(400, f"{what} must be a JSON object, not {type(value).__name__}")
    check_values(value, what)
    return value


def check_values(value: object, what: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH and strings that are not valid Unicode (lone surrogates), walking
    without recursion so that the walk itself cannot overflow."""
    pending: list[tuple[object, str, int]] = [(value, "", 1)]
    while pending:
        item, path, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise ApiError(400, f"{what} is nested too deeply (at most {MAX_DEPTH} levels)", path or None)
        if isinstance(item, dict):
            for key, child in item.items():
                check_text(key, what, path or None)
                pending.append((child, f"{path}.{key}" if path else key, depth + 1))
        elif isinstance(item, list):
            pending.extend((child, f"{path}.{i}" if path else str(i), depth + 1) for i, child in enumerate(item))
        elif isinstance(item, str):
            check_text(item, what, path or None)


def check_text(text: str, what: str, param: str | None) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ApiError(400, f"{what}: {param or 'a key'} holds a lone surrogate ({text[e.start]!r} at character "
                            f"{e.start}), which is not text", param) from None
