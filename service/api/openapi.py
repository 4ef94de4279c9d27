"""The OpenAPI document lists every error an operation can answer.

A route declares the errors only it knows of (``responses=errors(404, 409)``); the rest follow from
what it takes, alike for every route of a router made with ``route_class=DocumentedRoute``: 413 (the
body limit guards every request), 400 and 422 with a body, 422 with parameters, 401 and 403 with a
principal, 503 with the database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant
from fastapi.routing import APIRoute

from ranktune.service.api.deps import current_principal, session_dependency
from ranktune.service.api.errors import ERROR_TEXT, errors
from ranktune.service.schemas.common import ErrorResponse


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def generic_errors(dependant: Dependant) -> set[int]:
    """The errors an endpoint can answer because of what it takes (not because of what it does)."""
    codes = {413}
    tree = list(_dependants(dependant))
    calls = {d.call for d in tree}
    if any(d.body_params for d in tree):
        codes |= {400, 422}
    if any(d.path_params or d.query_params or d.header_params or d.cookie_params for d in tree):
        codes.add(422)
    if current_principal in calls:
        codes |= {401, 403, 503}  # the token is looked up in the database
    if session_dependency in calls:
        codes.add(503)
    return codes


class DocumentedRoute(APIRoute):
    """A route whose responses list its generic errors, each with the ErrorResponse shape (the 422
    too: validation errors have it, see api/errors.py)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        declared = kwargs.pop("responses", None) or {}
        codes = sorted(generic_errors(get_dependant(path=path, call=endpoint)))
        generic = errors(*codes) if _answers_json(kwargs.get("response_class")) else json_errors(*codes)
        super().__init__(path, endpoint, responses={**generic, **declared}, **kwargs)


def _answers_json(response_class: object) -> bool:
    # FastAPI documents a route's errors in its own media type; a plain-text route's errors are JSON.
    return (
        not isinstance(response_class, type)
        or getattr(response_class, "media_type", None) == "application/json"
    )


def json_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Errors documented as JSON whatever the route answers (the ErrorResponse schema is among the
    components: every other route's errors reference it)."""
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}}}
    return {code: {"description": ERROR_TEXT[code], "content": content} for code in codes}
