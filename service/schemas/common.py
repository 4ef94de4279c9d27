"""Building blocks shared by every request schema: strict, no unknown fields, finite numbers, and
free-form JSON bounded in depth and size."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ranktune.service.schemas.json_bounds import JSON_SIZE, JsonValue, within_depth


class StrictModel(BaseModel):
    """A request body: unknown fields, NaN/inf and silently coerced types are all a 422."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class PublicModel(BaseModel):
    """A response body."""

    model_config = ConfigDict(from_attributes=True)


# Free-form JSON a client sends (options checked later, timelines, per-site statistics): finite
# numbers, at most MAX_JSON_DEPTH levels, at most RANKTUNE_MAX_JSON_FIELD_BYTES serialized (see
# json_bounds.py). The 422's loc names the field, its message the place inside it.
JsonObject = Annotated[dict[str, JsonValue], JSON_SIZE]
JsonArray = Annotated[list[JsonValue], JSON_SIZE]
# Free-form JSON read back from the database: rows written before the bounds existed may nest
# deeper than a response can be serialized, so the excess becomes a marker string.
ReadJson = AfterValidator(within_depth)

# No control characters (and so no NUL, which PostgreSQL text columns cannot hold).
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
NO_NUL = r"^[^\x00]*$"
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=PRINTABLE)]
# Counts stored in INTEGER (32-bit on PostgreSQL) and BIGINT columns.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
BigCount = Annotated[int, Field(ge=0, le=INT64_MAX)]


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every 4xx: the same shape as FastAPI's validation errors; ``loc`` names the field."""

    detail: list[ErrorItem]
