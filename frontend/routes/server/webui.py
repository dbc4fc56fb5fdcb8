"""The chat web UI at ``/``: the static files of ``frontend/webui/``, served as they are (no build
step, no CDN: the page loads nothing from elsewhere, and its Content-Security-Policy says so).

The page needs no API key to load (it asks for one when the API answers 401); ``--no-webui``
turns it off (404). ``--path DIR`` (llama-server's) serves DIR's files at ``/`` instead, the
web UI's paths included: a GET that no route answers reads the file at its path under DIR
(``index.html`` for a directory); none, or a path leaving DIR (a link out of it too), is a 404.
As in llama-server, only the web UI's own paths load without the API key.
"""

from __future__ import annotations

import asyncio
import functools
import mimetypes
from pathlib import Path

from frontend.http.errors import ApiError
from frontend.http.asgi import Request, Response
from frontend.state import Frontend

_DIR = Path(__file__).resolve().parents[2] / "webui"

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
    if fe.cfg.static_path:
        return await serve_static(fe, req)
    if not fe.cfg.webui:
        raise ApiError(404, f"no endpoint {req.path} (the web UI is off: --no-webui)")
    name, content_type, _ = FILES[req.path]
    body = _read(name)
    if name == "index.html" and fe.cfg.api_prefix:  # its files are under --api-prefix too
        body = body.replace(b'"/webui/', b'"' + fe.cfg.api_prefix.encode() + b"/webui/")
    return Response(body, content_type=content_type.encode(), headers=list(_HEADERS))


async def serve_static(fe: Frontend, req: Request) -> Response:
    """The file of ``--path`` at the request's path."""
    root = Path(fe.cfg.static_path).resolve()
    try:
        target = (root / req.path.lstrip("/")).resolve()
        if target.is_dir():
            target = (target / "index.html").resolve()  # a link too, checked as any file
        found = target.is_relative_to(root) and target.is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte
        found = False
    if not found:
        raise ApiError(404, f"no endpoint or file {req.path!r}")
    content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type.endswith(("javascript", "json")):
        content_type += "; charset=utf-8"
    body = await asyncio.to_thread(target.read_bytes)  # a large file does not stall the other requests
    return Response(body, content_type=content_type.encode(), headers=[(b"x-content-type-options", b"nosniff")])
