"""CORS answers (frontend/http/cors.py) as llama-server gives them, for each --cors-origins mode.

Over HTTP the defaults are checked in test_api_native.py and the flags in test_api_llama_flags.py;
here the origin rules themselves, with llama-server's own test cases (tests/unit/test_security.py).
"""

from __future__ import annotations

import pytest

from frontend.http.cors import Cors

DEFAULTS = {"methods": "GET, POST, DELETE, OPTIONS", "allow_headers": "*"}


def allowed_origin(cors: Cors, origin: str | None) -> str | None:
    headers = dict(cors.headers({} if origin is None else {"origin": origin}))
    value = headers.get(b"access-control-allow-origin")
    return None if value is None else value.decode()


@pytest.mark.parametrize("origin", ["http://localhost", "http://localhost:8080", "http://127.0.0.1",
                                    "http://127.0.0.1:3000", "http://[::1]", "http://[::1]:3000"])
def test_localhost_mode_reflects_local_origins(origin):
    cors = Cors(["localhost"], credentials=True, **DEFAULTS)
    assert allowed_origin(cors, origin) == origin
    assert (b"vary", b"Origin") in cors.headers({"origin": origin})


@pytest.mark.parametrize("origin", ["http://web.mydomain.fr", "http://evil.com", "http://notlocalhost",
                                    "http://localhost.evil.com", "http://[::1"])
def test_localhost_mode_rejects_other_origins(origin):
    assert allowed_origin(Cors(["localhost"], credentials=True, **DEFAULTS), origin) is None


def test_any_origin_is_echoed_with_credentials_and_star_without():
    with_credentials = Cors(["*"], credentials=True, **DEFAULTS)
    assert allowed_origin(with_credentials, "web.mydomain.fr") == "web.mydomain.fr"
    assert allowed_origin(with_credentials, None) == "*"  # no Origin: not a browser's cross-origin call
    without = Cors(["*"], credentials=False, **DEFAULTS)
    assert allowed_origin(without, "web.mydomain.fr") == "*"
    assert (b"access-control-allow-credentials", b"false") in without.preflight()


def test_a_list_allows_its_origins_and_localhost_may_be_one_of_them():
    cors = Cors(["http://app.example", "localhost"], credentials=True, **DEFAULTS)
    assert allowed_origin(cors, "http://app.example") == "http://app.example"
    assert allowed_origin(cors, "http://localhost:5173") == "http://localhost:5173"
    assert allowed_origin(cors, "http://other.example") is None
    assert allowed_origin(cors, None) is None


def test_preflight_headers_are_the_flags():
    preflight = dict(Cors(["*"], methods="GET", allow_headers="Authorization", credentials=True).preflight())
    assert preflight[b"access-control-allow-methods"] == b"GET"
    assert preflight[b"access-control-allow-headers"] == b"Authorization"
    assert preflight[b"access-control-allow-credentials"] == b"true"
