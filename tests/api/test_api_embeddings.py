"""/v1/embeddings on a real embedding server (the embedded Gemma 3 270M, mean pooling), through
the openai SDK, langchain-openai and plain HTTP: unit vectors, meaning, encodings, token input,
batch invariance, concurrency, llama-server's native /embedding, every bad input, and fuzzing."""

from __future__ import annotations

import base64
import functools
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest
import schemathesis
from conftest import start_server
from hypothesis import HealthCheck, Phase, given, settings
from langchain_openai import OpenAIEmbeddings
from schemathesis import GenerationMode
from test_api_fuzz import CONFIG, _assert_error

# Embedding requests can take seconds on a busy 2-core machine (httpx's default timeout is 5 s).
post = functools.partial(httpx.post, timeout=120.0)

MAX_INPUTS = 40
SENTENCES = [
    "The cat sat on the mat.",
    "A cat was sitting on the rug.",
    "Quarterly revenue grew by twelve percent.",
    "Stock markets fell sharply on Monday.",
]


@pytest.fixture(scope="module")
def url():
    with start_server("--embeddings", "--pooling", "mean", "-np", "32", "--embd-max-inputs", str(MAX_INPUTS)) as h:
        yield h.base_url


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def vectors(client: openai.OpenAI, inputs, **kw) -> np.ndarray:
    out = client.embeddings.create(model="m", input=inputs, encoding_format="float", **kw)
    assert [d.index for d in out.data] == list(range(len(out.data)))
    return np.array([d.embedding for d in out.data])


def test_unit_vectors_whose_distances_mean_something(client: openai.OpenAI):
    v = vectors(client, SENTENCES)
    assert v.shape == (4, 640)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[0, 3]  # cat ~ cat, not cat ~ finance
    assert sim[2, 3] > sim[2, 1]


def test_base64_float_tokens_and_usage(client: openai.OpenAI, url: str):
    floats = vectors(client, SENTENCES[0])
    encoded = client.embeddings.create(model="m", input=SENTENCES[0])  # the SDK asks base64 and decodes it
    raw = post(f"{url}/v1/embeddings", json={"input": SENTENCES[0], "encoding_format": "base64"}).json()
    from_b64 = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.array_equal(from_b64, floats[0].astype(np.float32))
    assert np.allclose(encoded.data[0].embedding, floats[0])
    tokens = post(f"{url}/tokenize", json={"content": SENTENCES[0], "add_special": True}).json()["tokens"]
    by_tokens = client.embeddings.create(model="m", input=[tokens, tokens[:3]], encoding_format="float")
    assert np.allclose(by_tokens.data[0].embedding, floats[0], atol=1e-6)
    assert by_tokens.usage.prompt_tokens == len(tokens) + 3 == by_tokens.usage.total_tokens
    assert raw["usage"]["prompt_tokens"] == len(tokens) and raw["object"] == "list"


def test_langchain_openai_embeddings(client: openai.OpenAI, url: str):
    # check_embedding_ctx_length=False: send text (by default it sends OpenAI's tiktoken ids)
    lc = OpenAIEmbeddings(model="m", base_url=f"{url}/v1", api_key="unused", check_embedding_ctx_length=False)
    docs = np.array(lc.embed_documents(SENTENCES[:2]))
    query = np.array(lc.embed_query(SENTENCES[0]))
    assert np.allclose(docs, vectors(client, SENTENCES[:2]), atol=1e-6)
    assert np.allclose(query, docs[0], atol=1e-6)


def test_a_text_alone_and_in_a_batch_of_32_gives_the_same_vector(client: openai.OpenAI):
    text = "Batch invariance: the same text gives the same vector whatever runs beside it."
    others = [f"Companion sentence number {i} talks about something else entirely." for i in range(31)]
    alone = vectors(client, text)[0]
    batch = vectors(client, [*others[:13], text, *others[13:]])[13]
    assert float(alone @ batch) >= 0.999
    assert float(np.abs(alone - batch).max()) <= 1e-2


def test_concurrent_requests_share_decodes_and_get_their_own_vectors(client: openai.OpenAI):
    texts = [f"Request {i}: {SENTENCES[i % 4]}" for i in range(16)]
    solo = vectors(client, texts)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda t: vectors(client, t)[0], texts))
    # not bit-identical (other batch shapes take other kernels), within the batch-invariance bound
    assert (np.array(results) * solo).sum(axis=1).min() >= 0.999
    assert np.abs(np.array(results) - solo).max() <= 1e-2


def test_native_embedding_endpoint(url: str, client: openai.OpenAI):
    out = post(f"{url}/embedding", json={"content": SENTENCES[:2]}).json()
    assert [o["index"] for o in out] == [0, 1] and len(out[0]["embedding"]) == 1
    assert np.allclose(out[0]["embedding"][0], vectors(client, SENTENCES[0])[0], atol=1e-6)
    raw = post(f"{url}/embedding", json={"content": SENTENCES[0], "embd_normalize": -1}).json()
    assert abs(np.linalg.norm(raw[0]["embedding"][0]) - 1) > 0.01  # not normalised
    # llama-server answers "content" in its native shape on the OpenAI route too
    assert post(f"{url}/v1/embeddings", json={"content": "hi"}).json()[0]["index"] == 0


def test_embd_normalize_applies_to_the_openai_route_as_in_llama_server(url: str):
    def vector(**body) -> np.ndarray:
        r = post(f"{url}/v1/embeddings", json={"input": SENTENCES[0], **body})
        assert r.status_code == 200, r.text
        return np.array(r.json()["data"][0]["embedding"])

    unit = vector()
    assert abs(np.linalg.norm(unit) - 1) < 1e-5
    raw = vector(embd_normalize=-1)
    assert abs(np.linalg.norm(raw) - 1) > 0.01 and np.allclose(raw / np.linalg.norm(raw), unit, atol=1e-5)
    assert abs(np.abs(vector(embd_normalize=1)).sum() - 1) < 1e-4  # taxicab
    big_p = vector(embd_normalize=1000)  # |x| ** 1000 overflows float32: it was all zeros
    assert abs((np.abs(big_p / np.abs(big_p).max()) ** 1000).sum() ** (1 / 1000) * np.abs(big_p).max() - 1) < 1e-3
    assert post(f"{url}/v1/embeddings", json={"input": "x", "embd_normalize": -2}).status_code == 400


def test_vllm_truncate_prompt_tokens_keeps_each_inputs_last_or_first_tokens(url: str):
    ids = post(f"{url}/tokenize", json={"content": SENTENCES[2], "add_special": True}).json()["tokens"]
    assert len(ids) > 6

    def embedding(**body) -> tuple[np.ndarray, int]:
        r = post(f"{url}/v1/embeddings", json=body)
        assert r.status_code == 200, r.text
        return np.array(r.json()["data"][0]["embedding"]), r.json()["usage"]["prompt_tokens"]

    cut, n_cut = embedding(input=SENTENCES[2], truncate_prompt_tokens=5)
    tail, _ = embedding(input=ids[-5:])  # the same five tokens, given as ids
    whole, n_whole = embedding(input=SENTENCES[2])
    assert n_cut == 5 and n_whole == len(ids)
    assert np.allclose(cut, tail, atol=1e-5) and not np.allclose(cut, whole, atol=1e-3)
    head, n_head = embedding(input=SENTENCES[2], truncate_prompt_tokens=5, truncation_side="right")
    assert n_head == 5 and np.allclose(head, embedding(input=ids[:5])[0], atol=1e-5)  # its first five
    assert embedding(input=SENTENCES[2], truncate_prompt_tokens=-1)[1] == len(ids)  # it fits: nothing cut
    long_cut = embedding(input=["word " * 600], truncate_prompt_tokens=-1)[1]
    assert long_cut == 512  # as many as one input may have, where the whole input is a 400


def test_max_model_len_is_what_one_input_may_hold(url: str):
    """vLLM's max_model_len on an embedding server: one input's tokens (it runs whole in one
    decode), not the KV pool that /props' n_ctx shows."""
    listed = httpx.get(f"{url}/v1/models", timeout=30).json()["data"][0]
    counted = post(f"{url}/tokenize", json={"prompt": "x"}).json()
    assert listed["max_model_len"] == counted["max_model_len"] == 512 < listed["meta"]["n_ctx"]
    assert post(f"{url}/v1/embeddings", json={"input": "word " * 520}).status_code == 400  # past it


def test_vllm_add_special_tokens_and_normalize(url: str):
    def embedding(**body) -> tuple[np.ndarray, int]:
        r = post(f"{url}/v1/embeddings", json={"input": SENTENCES[0], **body})
        assert r.status_code == 200, r.text
        return np.array(r.json()["data"][0]["embedding"]), r.json()["usage"]["prompt_tokens"]

    plain, n_plain = embedding(add_special_tokens=False)
    _, n_special = embedding()
    assert 0 < n_plain < n_special
    raw, _ = embedding(normalize=False)
    assert abs(np.linalg.norm(raw) - 1) > 0.01 and abs(np.linalg.norm(embedding(normalize=True)[0]) - 1) < 1e-5
    assert abs(np.abs(embedding(normalize=True, embd_normalize=1)[0]).sum() - 1) < 1e-4  # llama-server's wins


@pytest.mark.parametrize("body, param", [({"truncate_prompt_tokens": 0}, "truncate_prompt_tokens"),
                                         ({"priority": 1}, "priority"), ({"request_id": "x"}, "request_id")])
def test_vllm_extras_an_embedding_server_refuses_name_themselves(url: str, body: dict, param: str):
    r = post(f"{url}/v1/embeddings", json={"input": "x", **body})
    assert r.status_code == 400 and param in r.text, r.text


def test_the_servers_embd_normalize_is_the_default_a_request_overrides():
    with start_server("--embeddings", "--pooling", "mean", "-np", "4", "--embd-normalize", "1") as h:
        taxicab = post(f"{h.base_url}/v1/embeddings", json={"input": SENTENCES[0]}).json()["data"][0]["embedding"]
        assert abs(np.abs(taxicab).sum() - 1) < 1e-4
        native = post(f"{h.base_url}/embedding", json={"content": SENTENCES[0], "embd_normalize": 2}).json()
        assert abs(np.linalg.norm(native[0]["embedding"][0]) - 1) < 1e-5


@pytest.mark.parametrize("body, message", [
    ({"input": []}, "input must not be empty"),
    ({"input": [5, 10**7]}, "outside the vocabulary"),
    ({"input": ["ok", [5, "x", 10**7]]}, "outside the vocabulary"),
    ({"input": [[5], []]}, "input[1] is empty"),
    ({"input": {"content": "string"}}, "must be an array of content parts"),
    ({"input": {"content": [{"type": "unknown"}]}}, "must be a text part"),
    ({"input": {"content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}},
     "no multimodal projector loaded"),
    ({"input": {"prompt_string": "x", "multimodal_data": ["AAAA"]}}, "no multimodal projector loaded"),
    ({"input": {"prompt_string": "x", "content": [{"type": "text", "text": "y"}]}}, "exactly one of"),
    ({"input": {"prompt": "x"}}, "prompt"),
    ({"input": ["x"] * (MAX_INPUTS + 1)}, f"at most {MAX_INPUTS} (--embd-max-inputs)"),
    ({"input": ["short", "word " * 600]}, "input[1] has 602 tokens, more than the 512"),
    ({"input": "x", "dimensions": 64}, "dimensions must be 640"),
    ({"input": "x", "dimensions": 10_000}, "more than the model's 640"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"model": "m"}, '"input" must be provided'),
])
def test_bad_input_is_a_400_in_openai_shape(url: str, body: dict, message: str):
    r = post(f"{url}/v1/embeddings", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert message in error["message"] and error["type"] in ("invalid_request_error", "exceed_context_size_error")


def test_every_prompt_form_of_llama_server(url: str):
    """Its tokenize_input_prompts: mixed text and token ids, object prompts, OpenAI content parts;
    the same text in any form gives the same vector."""
    ids = httpx.post(f"{url}/tokenize", json={"content": "hello world", "add_special": True}).json()["tokens"]
    text_ids = httpx.post(f"{url}/tokenize", json={"content": " world"}).json()["tokens"]
    forms = ["hello world", ids, {"prompt_string": "hello world"}, [*ids[:-len(text_ids)], " world"],
             {"content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}]},
             {"prompt_string": [*ids[:-len(text_ids)], " world"]}]
    out = post(f"{url}/v1/embeddings", json={"input": forms}).json()
    v = np.array([d["embedding"] for d in out["data"]])
    assert v.shape == (len(forms), 640) and out["usage"]["prompt_tokens"] == len(ids) * len(forms)
    assert (v @ v[0]).min() > 0.999
    single = post(f"{url}/v1/embeddings", json={"input": [*ids[:-len(text_ids)], " world"]}).json()
    assert len(single["data"]) == 1  # a list holding a token id is one prompt
    empty = post(f"{url}/v1/embeddings", json={"input": ""}).json()  # the BOS token alone, as llama-server
    assert empty["usage"]["prompt_tokens"] == 1 and len(empty["data"][0]["embedding"]) == 640


def test_the_sdk_raises_bad_request(client: openai.OpenAI):
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="m", input=[])


def test_generation_and_rerank_answer_501_on_an_embedding_server(url: str):
    chat = post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 501 and "--embeddings" in chat.json()["error"]["message"]
    rerank = post(f"{url}/v1/rerank", json={"query": "q", "documents": ["d"]})
    assert rerank.status_code == 501 and "--reranking" in rerank.json()["error"]["message"]
    assert httpx.get(f"{url}/health").status_code == 200  # and it still serves


@pytest.mark.parametrize("path", ["/v1/embeddings", "/embedding", "/v1/score"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_fuzzed_embedding_requests_get_no_server_error(url: str, path: str, mode: GenerationMode):
    document = httpx.get(f"{url}/openapi.json").json()
    operation = schemathesis.openapi.from_dict(document, config=CONFIG).find_operation_by_label(f"POST {path}")

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(mode))
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call(base_url=url, timeout=60)
        assert response.status_code < 500, f"{response.status_code} {response.text[:500]}"
        if response.status_code >= 400:
            _assert_error(f"POST {path}", response)

    fuzz()
    assert httpx.get(f"{url}/health").status_code == 200
