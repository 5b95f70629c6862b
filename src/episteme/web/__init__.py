"""The web console: server-rendered pages for the person on call, at `/` of `episteme serve`.

The console is a skin like the CLI and the API: each page calls `Ledger` (or the
`DiagnosisEngine`) and renders the answer with Jinja2; the small script in `static/`
only enhances pages that already work without it (live progress on the diagnosis
desk). Sign-in exchanges a bearer token for a signed session cookie (`session`);
every action checks the principal's roles.

`create_app` includes `router` and mounts `static_files()` at `STATIC_PATH`.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.staticfiles import StaticFiles

from . import desk, investigate, pages, session
from .render import STATIC_PATH

__all__ = ["STATIC_PATH", "router", "static_files"]

router = APIRouter(include_in_schema=False)
router.include_router(session.router)
router.include_router(pages.router)
router.include_router(investigate.router)
router.include_router(desk.router)


def static_files() -> StaticFiles:
    """The console's stylesheet and script, shipped in the package."""
    return StaticFiles(packages=[("episteme.web", "static")])
