"""Path and query parameters, bounded like the columns they meet: a value no column can hold is a
422 naming the parameter (rather than the driver's overflow error, a 500), and OpenAPI shows the bounds."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from ranktune.service.schemas.common import INT32_MAX, INT64_MAX, PRINTABLE

# Ids are INTEGER primary keys: 32-bit on PostgreSQL, so no row anywhere has a larger id.
SearchId = Annotated[int, Path(ge=1, le=INT32_MAX, description="The search's id")]
# SQL OFFSET is a 64-bit integer on SQLite and PostgreSQL.
Offset = Annotated[int, Query(ge=0, le=INT64_MAX, description="Rows to skip")]
LeaseId = Annotated[str, Path(min_length=1, max_length=36, pattern=PRINTABLE)]
TokenName = Annotated[str, Path(min_length=1, max_length=200, pattern=PRINTABLE)]
