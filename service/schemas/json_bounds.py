"""Bounds on free-form JSON: finite numbers, nesting depth, serialized size.

A client's value beyond a bound is a 422 on its field. A value read back from the database is never
an error (a row written before the bounds existed must not break every later read): in a response,
parts nested deeper than ``READ_DEPTH`` become the string ``OMITTED``; in a stored spec validated
again (``context=STORED``), parts beyond the request bound do.

The size limit is a setting (``RANKTUNE_MAX_JSON_FIELD_BYTES``); the request-limits middleware puts
it in ``FIELD_BYTES`` for the request it serves, since FastAPI passes no context to validation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, ValidationInfo
from pydantic_core import to_json

T = TypeVar("T")

# Far above any real option or timeline.
MAX_JSON_DEPTH = 32
# A response carries an accepted value a few levels down (a spec's method.dmlora, a list of trials):
# room for that, and still far below what pydantic serializes (about 255 levels).
READ_DEPTH = 2 * MAX_JSON_DEPTH
OMITTED = "(omitted: nested too deep)"
# Validation context for values read back from the database: sanitize, never refuse.
STORED: Mapping[str, bool] = MappingProxyType({"stored": True})


DEFAULT_FIELD_BYTES = 1 << 20
FIELD_BYTES: ContextVar[int] = ContextVar("ranktune_json_field_bytes", default=DEFAULT_FIELD_BYTES)


@contextmanager
def field_bytes_limit(max_bytes: int) -> Iterator[None]:
    """Validation in this context accepts at most ``max_bytes`` of JSON per bounded field."""
    token = FIELD_BYTES.set(max_bytes)
    try:
        yield
    finally:
        FIELD_BYTES.reset(token)


def _where(path: str) -> str:
    return path if len(path) <= 120 else "..." + path[-117:]


def _key(key: object) -> str:
    text = str(key)
    return text if len(text) <= 40 else text[:37] + "..."


def check_json(value: Any, levels_left: int, path: str = "") -> None:
    """Raise ValueError when ``value`` holds NaN/inf or nests more than ``levels_left`` containers."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{_where(path) or 'value'}: must be a finite number, got {value}")
        return
    if not isinstance(value, dict | list):
        return
    if levels_left <= 0:
        raise ValueError(f"{_where(path) or 'value'}: nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            check_json(item, levels_left - 1, f"{path}.{_key(key)}" if path else _key(key))
    else:
        for i, item in enumerate(value):
            check_json(item, levels_left - 1, f"{path}[{i}]")


def within_depth(value: T, levels_left: int = READ_DEPTH) -> T:
    """``value`` with every container nested deeper than ``levels_left`` replaced by ``OMITTED``;
    the very same object when nothing is (reads stay cheap)."""
    if not isinstance(value, dict | list):
        return value
    if levels_left <= 0:
        return OMITTED  # type: ignore[return-value]
    inner = levels_left - 1
    if isinstance(value, dict):
        copied: dict[Any, Any] | None = None
        for key, item in value.items():
            if isinstance(item, dict | list) and (new := within_depth(item, inner)) is not item:
                copied = copied if copied is not None else dict(value)
                copied[key] = new
        return value if copied is None else copied  # type: ignore[return-value]
    listed: list[Any] | None = None
    for i, item in enumerate(value):
        if isinstance(item, dict | list) and (new := within_depth(item, inner)) is not item:
            listed = listed if listed is not None else list(value)
            listed[i] = new
    return value if listed is None else listed  # type: ignore[return-value]


def _stored(info: ValidationInfo) -> bool:
    return isinstance(info.context, Mapping) and bool(info.context.get("stored"))


def _json_value(value: Any, info: ValidationInfo) -> Any:
    # One level belongs to the object or array that holds this value.
    if _stored(info):
        return within_depth(value, MAX_JSON_DEPTH - 1)
    check_json(value, MAX_JSON_DEPTH - 1)
    return value


def _json_size(value: T, info: ValidationInfo) -> T:
    if _stored(info):
        return value
    limit = FIELD_BYTES.get()
    size = len(to_json(value))
    if size > limit:
        raise ValueError(
            f"{size:,} bytes of JSON; at most {limit:,} are accepted per field "
            "(RANKTUNE_MAX_JSON_FIELD_BYTES)"
        )
    return value


# Any JSON value, finite and at most MAX_JSON_DEPTH - 1 levels deep (its holder is the first level).
JsonValue = Annotated[Any, AfterValidator(_json_value)]
# Caps the serialized size of the field it annotates.
JSON_SIZE = AfterValidator(_json_size)
