"""API keys: Bearer or X-Api-Key, several keys, and no keys meaning no check at all."""

from __future__ import annotations

from frontend.http.auth import ApiKeys


def test_no_key_configured_ignores_authorization():
    keys = ApiKeys([])
    assert keys.allows({})
    assert keys.allows({"authorization": "Bearer whatever-the-sdk-sends"})


def test_bearer_and_x_api_key():
    keys = ApiKeys(["k1", "k2"])
    assert keys.allows({"authorization": "Bearer k1"})
    assert keys.allows({"authorization": "bearer  k2 "})
    assert keys.allows({"x-api-key": "k2"})


def test_wrong_or_missing_keys_are_refused():
    keys = ApiKeys(["secret"])
    assert not keys.allows({})
    assert not keys.allows({"authorization": "Bearer secre"})
    assert not keys.allows({"authorization": "Basic secret"})
    assert not keys.allows({"authorization": "Bearer "})
    assert not keys.allows({"x-api-key": "secretsecret"})


def test_a_key_that_is_not_ascii_matches_what_a_client_sends():
    for key in ("clé-ünïcode", "voilà", "Å"):  # "à" and "Å" end in bytes str.strip() takes for spaces
        keys = ApiKeys([key])
        sent = key.encode().decode("latin-1")  # the UTF-8 bytes, as the ASGI headers give them
        assert keys.allows({"authorization": f"Bearer {sent}"}) and keys.allows({"x-api-key": sent}), key
        assert not keys.allows({"x-api-key": key})


def test_either_header_may_carry_the_key():
    # e.g. the openai SDK sends its api_key as Bearer while the key travels in default_headers
    keys = ApiKeys(["secret"])
    assert keys.allows({"authorization": "Bearer sk-placeholder", "x-api-key": "secret"})
