"""Building blocks shared by every request schema: strict, no unknown fields, finite numbers."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """A request body: unknown fields, NaN/inf and silently coerced types are all a 422."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class PublicModel(BaseModel):
    """A response body."""

    model_config = ConfigDict(from_attributes=True)


def _finite_json(value: Any, path: str = "") -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path or 'value'}: must be a finite number, got {value}")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite_json(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _finite_json(item, f"{path}[{i}]")
    return value


# Free-form JSON (options validated later, timelines, per-site statistics) without NaN or inf.
FiniteJson = Annotated[Any, AfterValidator(_finite_json)]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every 4xx: the same shape as FastAPI's validation errors; ``loc`` names the field."""

    detail: list[ErrorItem]
