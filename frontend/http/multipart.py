"""multipart/form-data bodies (RFC 7578), as OpenAI's file uploads send them: text fields and
files by name. Only what /v1/audio/transcriptions needs; a malformed body is a 400."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import Message

from frontend.http.errors import invalid


@dataclass(slots=True)
class Form:
    fields: dict[str, str] = field(default_factory=dict)  # text fields (the last of a repeated name)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # name -> (file name, content)


def _params(header: str, value: str) -> Message:
    """A header's parameters (``name``, ``filename``, ``boundary``) read as email does."""
    message = Message()
    message[header] = value
    return message


def parse(content_type: str, body: bytes) -> Form:
    boundary = _params("content-type", content_type).get_param("boundary", header="content-type")
    if not content_type.lower().startswith("multipart/form-data") or not isinstance(boundary, str) or not boundary:
        raise invalid("the request body must be multipart/form-data (with a boundary)")
    form = Form()
    # Each part follows CRLF--boundary; the body's first delimiter may open it without the CRLF.
    chunks = (b"\r\n" + body).split(b"\r\n--" + boundary.encode())
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        raise invalid("the multipart body is not closed by its boundary")
    for chunk in chunks[1:-1]:
        head, blank, content = chunk.partition(b"\r\n\r\n")
        if not blank:
            raise invalid("a part of the multipart body has no headers")
        disposition = next((line.split(b":", 1)[1].decode("latin-1").strip() for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-disposition:")), "")
        params = _params("content-disposition", disposition)
        name = params.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise invalid("a part of the multipart body has no name")
        filename = params.get_filename()
        if filename is None:
            try:
                form.fields[name] = content.decode()
            except UnicodeDecodeError:
                raise invalid(f"the field {name!r} is not UTF-8 text", param=name) from None
        else:
            form.files[name] = (filename, content)
    return form
