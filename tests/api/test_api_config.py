"""Servers started with frontend options: API keys, HTTPS, two HTTP workers, body limit, and a
tiny queue that overflows into 503 + Retry-After (which the openai SDK retries)."""

from __future__ import annotations

import re
import ssl
import threading
import time

import httpx
import openai
import pytest
from conftest import start_server
from frontend_support import self_signed_cert


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    certfile, keyfile = self_signed_cert(str(tmp_path_factory.mktemp("tls")))
    args = ["--api-key", "key-one", "--api-key", "key-two", "--ssl-certfile", certfile, "--ssl-keyfile", keyfile,
            "--http-workers", "2", "--max-body-size", "4096"]
    with start_server(*args) as handle:
        yield handle, ssl.create_default_context(cafile=certfile)


def test_https_and_api_keys(secure):
    handle, trust = secure
    url = handle.base_url
    assert url.startswith("https://")
    # no key needed; every worker is ready once one is (fresh connections reach either)
    assert {httpx.get(f"{url}/health", verify=trust).status_code for _ in range(10)} == {200}
    with httpx.Client(verify=trust) as http:
        r = http.get(f"{url}/v1/models")
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert http.get(f"{url}/v1/models", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert http.get(f"{url}/v1/models", headers={"authorization": "Bearer key-two"}).status_code == 200
        assert http.get(f"{url}/v1/models", headers={"x-api-key": "key-one"}).status_code == 200
        assert http.get(f"{url}/metrics").status_code == 401  # keys are set: /metrics needs one too
        assert http.get(f"{url}/metrics", headers={"x-api-key": "key-one"}).status_code == 200
        r = http.post(f"{url}/v1/completions", headers={"x-api-key": "key-one"}, content=b"x" * 5000)
        assert r.status_code == 413
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="key-one", http_client=httpx.Client(verify=trust),
                        _strict_response_validation=True)
    out = sdk.chat.completions.create(model="any", messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    assert out.choices[0].message.content is not None
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="nope", http_client=httpx.Client(verify=trust)).models.list()


def test_two_workers_serve_concurrent_requests(secure):
    handle, trust = secure
    sdk = openai.OpenAI(base_url=f"{handle.base_url}/v1", api_key="key-two", http_client=httpx.Client(verify=trust))
    results: list[str] = []

    def ask(i: int) -> None:
        out = sdk.completions.create(model="any", prompt=f"{i} + {i} =", max_tokens=3, temperature=0)
        results.append(out.choices[0].finish_reason)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8


def _metric(url: str, name: str) -> float:
    return float(re.search(rf"^{re.escape(name)} (\S+)$", httpx.get(f"{url}/metrics").text, re.MULTILINE).group(1))


def test_full_queue_is_503_with_retry_after_and_the_sdk_retries():
    with start_server("-np", "1", "--max-queue", "1") as handle:
        url = handle.base_url
        long_body = {"prompt": "Count: 1, 2, 3,", "max_tokens": 60, "temperature": 0, "ignore_eos": True}
        short_body = {**long_body, "max_tokens": 2}
        threads = [threading.Thread(target=httpx.post, args=(f"{url}/v1/completions",),
                                    kwargs={"json": body, "timeout": 60}) for body in (long_body, short_body)]
        threads[0].start()
        deadline = time.monotonic() + 30
        while not any(s["is_processing"] for s in httpx.get(f"{url}/slots").json()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        threads[1].start()  # waits in the queue: the queue is now full
        while _metric(url, "llamacpp:requests_deferred") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = httpx.post(f"{url}/v1/completions", json=short_body)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["type"] == "unavailable_error"
        # The SDK's first try finds the queue still full; it waits Retry-After and tries again.
        rejected = _metric(url, "ggserve:requests_rejected_total")
        # generous retries: on a loaded 2-core machine the queue may take tens of seconds to drain
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=40)
        out = sdk.completions.create(model="any", prompt="Hi", max_tokens=2)
        assert out.choices[0].finish_reason in ("stop", "length")
        assert _metric(url, "ggserve:requests_rejected_total") > rejected
        for t in threads:
            t.join()


def test_serves_on_the_ipv6_loopback():
    with start_server("--host", "::1", ready=False) as handle:
        url = f"http://[::1]:{handle.port}"
        deadline = time.monotonic() + 120
        while True:
            assert handle.proc.poll() is None, handle.log()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, handle.log()
            time.sleep(0.2)
        r = httpx.post(f"{url}/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
