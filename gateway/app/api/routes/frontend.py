"""The built web UI (`frontend/dist`), served at `/` in local mode; nginx serves it in compose.

Registered last, so every API route wins. Unknown paths under the API prefixes stay JSON 404s;
any other unknown path is a client-side route and gets `index.html`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response
from starlette.convertors import Convertor, register_url_convertor

from app.core.errors import NotFound

# the UI loads only its own bundle and talks only to this origin
UI_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)


class UiPath(Convertor[str]):
    """Any path outside the API's prefixes, which keep their own 404 and 405 answers."""

    regex = r"(?!(?:api|v1|health|metrics|docs|openapi\.json)(?:/|$)).*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("uipath", UiPath())
_IMMUTABLE = "public, max-age=31536000, immutable"  # vite's hashed assets/ names


def _is_asset(root: Path, path: str) -> bool:
    """A file of the build other than index.html. Paths the file system refuses (a NUL, a name
    too long) are client-side routes like any other unknown path, never a 500."""
    try:
        target = (root / path).resolve()
        return target != root / "index.html" and target.is_relative_to(root) and target.is_file()
    except (OSError, ValueError):
        return False


def build_router(dist: Path) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    root = dist.resolve()
    index = root / "index.html"

    @router.get("/{path:uipath}")
    async def ui(path: str) -> Response:
        if not index.is_file():
            raise NotFound("the web UI is not built (run scripts/build-frontend.sh)")
        if path and _is_asset(root, path):
            cache = _IMMUTABLE if path.startswith("assets/") else "no-cache"
            return FileResponse(
                root / path, headers={"Cache-Control": cache, "Content-Security-Policy": UI_CSP}
            )
        return FileResponse(
            index, headers={"Cache-Control": "no-cache", "Content-Security-Policy": UI_CSP}
        )

    return router
