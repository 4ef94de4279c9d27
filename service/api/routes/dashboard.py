"""The dashboard at ``/``: a placeholder until the dashboard issue lands."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

PLACEHOLDER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ranktune</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 3em auto">
<h1>ranktune</h1>
<p>Automated LoRA rank search. The dashboard is coming; meanwhile:</p>
<ul>
<li><a href="/docs">API documentation (OpenAPI)</a></li>
<li><a href="/api/v1/searches">searches</a> (needs a user token unless the server runs open)</li>
<li><a href="/healthz">health</a> and <a href="/metrics">metrics</a></li>
</ul>
</body></html>
"""


@router.get("/", response_class=HTMLResponse)
def dashboard() -> HTMLResponse:
    return HTMLResponse(PLACEHOLDER)
