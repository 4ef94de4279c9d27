"""The dashboard: a static single-page app at ``/`` that reads the REST API with the user's token.

The shell and its assets carry no data and need no token; every number on the page comes from
``/api/v1`` calls the browser makes with ``Authorization: Bearer``. plotly.js is served from the
installed ``plotly`` package, so the page works without network access.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from ranktune.service.errors import NotFound

router = APIRouter(include_in_schema=False)

ASSETS = Path(__file__).resolve().parents[2] / "dashboard"
STATIC_PREFIX = "/dashboard/static"
# Only what the page needs; inline styles are for plotly, which sets style attributes itself.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SHELL_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# name → media type; anything else under the prefix is a 404 (no paths from the request reach disk).
JS = "text/javascript; charset=utf-8"
OWN_ASSETS = {
    "util.js": JS,
    "plots.js": JS,
    "detail.js": JS,
    "app.js": JS,
    "style.css": "text/css; charset=utf-8",
}
PLOTLY_JS = "plotly.min.js"


@cache
def plotly_js_path() -> Path | None:
    """plotly.min.js inside the installed ``plotly`` package, found without importing plotly."""
    spec = importlib.util.find_spec("plotly")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "package_data" / PLOTLY_JS
        if path.is_file():
            return path
    return None


@router.get("/")
def dashboard() -> FileResponse:
    return FileResponse(ASSETS / "index.html", media_type="text/html; charset=utf-8", headers=SHELL_HEADERS)


@router.get(STATIC_PREFIX + "/{name}")
def static_asset(name: str) -> Response:
    headers = {"X-Content-Type-Options": "nosniff"}
    if name == PLOTLY_JS:
        path = plotly_js_path()
        if path is None:
            raise NotFound("name: plotly.min.js is missing; pip install plotly", field="name")
        # The installed plotly changes only with a reinstall: let the browser keep it for a day.
        headers["Cache-Control"] = "public, max-age=86400"
        return FileResponse(path, media_type=JS, headers=headers)
    if name not in OWN_ASSETS:
        raise NotFound(f"name: the dashboard has no file {name!r}", field="name")
    headers["Cache-Control"] = "no-cache"
    return FileResponse(ASSETS / name, media_type=OWN_ASSETS[name], headers=headers)
