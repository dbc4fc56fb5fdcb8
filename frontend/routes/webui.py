"""The chat web UI at ``/``: the static files of ``frontend/webui/``, served as they are (no build
step, no CDN: the page loads nothing from elsewhere, and its Content-Security-Policy says so).

The page needs no API key to load (it asks for one when the API answers 401); ``--no-webui``
turns it off (404).
"""

from __future__ import annotations

import functools
from pathlib import Path

from frontend.http.errors import ApiError
from frontend.http.asgi import Request, Response
from frontend.state import Frontend

_DIR = Path(__file__).resolve().parent.parent / "webui"

# path -> (file, content type, summary for /openapi.json)
FILES = {
    "/": ("index.html", "text/html; charset=utf-8", "The chat web UI"),
    "/webui/app.js": ("app.js", "text/javascript; charset=utf-8", "The web UI's script"),
    "/webui/markdown.js": ("markdown.js", "text/javascript; charset=utf-8", "The web UI's markdown renderer"),
    "/webui/style.css": ("style.css", "text/css; charset=utf-8", "The web UI's style sheet"),
}

# Model output is shown in this page: nothing but its own files may run or load, even if some
# text slipped through the renderer's escaping.
_HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
     b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-cache"),  # revalidate: a new ggserve version serves new files
]


@functools.cache
def _read(name: str) -> bytes:
    return (_DIR / name).read_bytes()


async def serve(fe: Frontend, req: Request) -> Response:
    if not fe.cfg.webui:
        raise ApiError(404, f"no endpoint {req.path} (the web UI is off: --no-webui)")
    name, content_type, _ = FILES[req.path]
    return Response(_read(name), content_type=content_type.encode(), headers=list(_HEADERS))
