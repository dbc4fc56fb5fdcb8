"""Real BERT embeddings and reranking, checked against an independent numpy forward pass.

all-MiniLM-L6-v2 (converted by tests/embedding_models.py, pooling from the GGUF: mean) must give,
per sentence, the vector of the numpy reference on the same weights, with the tokens of Hugging
Face's own tokenizer. A tiny random BERT reranker proves /v1/rerank's plumbing: its scores are
the numpy rank head's, its order, top_n, documents and TEI's shape. The vectors go through the
executor's shared-memory arena; an executor killed mid-request fails it clearly (503) and leaves no
segment behind.
"""

from __future__ import annotations

import functools
import glob
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest
from conftest import start_server
from embedding_models import (
    TINY_HEADS,
    BertReference,
    minilm_dir,
    minilm_gguf,
    minilm_gguf_weights,
    tiny_reranker_gguf,
    tiny_reranker_weights,
)
from tokenizers import Tokenizer as HfTokenizer

# Embedding requests can take seconds on a busy 2-core machine (httpx's default timeout is 5 s).
post = functools.partial(httpx.post, timeout=120.0)

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "Two men pushed carts through the woods.",
    "Résumé of the naïve café owner, who's unbelievably well-known!",
]


@pytest.fixture(scope="module")
def hf_tokenizer() -> HfTokenizer:
    tokenizer = HfTokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


@pytest.fixture(scope="module")
def minilm_url():
    with start_server("-m", minilm_gguf(), "--embeddings", "-np", "16") as handle:
        yield handle.base_url


def test_minilm_matches_the_numpy_reference(minilm_url: str, hf_tokenizer: HfTokenizer):
    reference = BertReference(minilm_gguf_weights(), n_head=12)
    client = openai.OpenAI(base_url=f"{minilm_url}/v1", api_key="unused", max_retries=0)
    out = client.embeddings.create(model="m", input=SENTENCES, encoding_format="float")
    for sentence, data in zip(SENTENCES, out.data):
        tokens = hf_tokenizer.encode(sentence).ids
        ours = post(f"{minilm_url}/tokenize", json={"content": sentence, "add_special": True}).json()
        assert ours["tokens"] == tokens
        cosine = float(np.dot(reference.mean_embedding(tokens), data.embedding))
        assert cosine >= 0.99, (sentence, cosine)
    v = np.array([d.embedding for d in out.data])
    assert (v @ v.T)[0, 1] > (v @ v.T)[0, 2]  # eating ~ eating, not carrying a baby


def test_minilm_limits(minilm_url: str):
    too_long = post(f"{minilm_url}/v1/embeddings", json={"input": ["ok", "word " * 600]})
    assert too_long.status_code == 400 and "input[1] has 602 tokens" in too_long.json()["error"]["message"]
    shortened = post(f"{minilm_url}/v1/embeddings", json={"input": "hi", "dimensions": 128})
    assert shortened.status_code == 400 and "dimensions must be 384" in shortened.json()["error"]["message"]
    same = post(f"{minilm_url}/v1/embeddings", json={"input": "hi", "dimensions": 384})
    assert same.status_code == 200 and len(same.json()["data"][0]["embedding"]) == 384


def test_pooling_none_gives_a_vector_per_token_on_the_native_route(hf_tokenizer: HfTokenizer):
    tokens = hf_tokenizer.encode(SENTENCES[0]).ids
    with start_server("-m", minilm_gguf(), "--embeddings", "--pooling", "none", "-np", "4") as handle:
        native = post(f"{handle.base_url}/embedding", json={"content": SENTENCES[0]}).json()
        oai = post(f"{handle.base_url}/v1/embeddings", json={"input": SENTENCES[0]})
        # 90 inputs of ~500 tokens: 45,000 vectors of 384 values (the audit's 128 made 512 MB of JSON)
        many = post(f"{handle.base_url}/embedding", json={"content": ["word " * 498] * 90})
        assert many.status_code == 400 and "--pooling none" in many.json()["error"]["message"]
    rows = np.array(native[0]["embedding"])
    assert rows.shape == (len(tokens), 384)
    reference = BertReference(minilm_gguf_weights(), n_head=12).hidden(tokens)
    cosines = (rows * reference).sum(axis=1) / np.linalg.norm(rows, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosines.min() >= 0.99  # each token's hidden state, unnormalised
    assert oai.status_code == 400 and "pooling 'none'" in oai.json()["error"]["message"]


def _executor_pid(launcher_pid: int) -> int:
    """The launcher's executor child (0 while there is none)."""
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat, open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
                args = cmdline.read().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == launcher_pid and b"executor" in args:
            return int(entry)
    return 0


def _embed_when_ready(url: str, deadline: float) -> list[list[float]]:
    while True:
        r = post(f"{url}/v1/embeddings", json={"input": SENTENCES})
        if r.status_code == 200 or time.monotonic() > deadline:
            assert r.status_code == 200, r.text
            return [d["embedding"] for d in r.json()["data"]]
        time.sleep(0.5)


def test_vectors_go_through_shared_memory_and_an_executor_killed_mid_request_leaves_nothing_behind():
    with start_server("-m", minilm_gguf(), "--embeddings", "-np", "1", "--metrics") as handle:
        before = _embed_when_ready(handle.base_url, time.monotonic())
        pid = _executor_pid(handle.proc.pid)
        (segment,) = glob.glob(f"/dev/shm/ggserve-*-executor0-{pid}")
        metrics = httpx.get(f"{handle.base_url}/metrics", timeout=30).text
        assert "ggserve:vectors_inline_total 0.0" in metrics  # every step's rows went through the arena
        with ThreadPoolExecutor(1) as pool:  # 2,000 one-input steps: seconds, with rows in the arena
            cut = pool.submit(post, f"{handle.base_url}/v1/embeddings", json={"input": ["word"] * 2000})
            time.sleep(1.0)
            os.kill(pid, signal.SIGKILL)
            cut = cut.result()
        assert cut.status_code == 503 and "executor 0 failed" in cut.json()["error"]["message"], cut.text
        after = _embed_when_ready(handle.base_url, time.monotonic() + 120)  # 503s while it restarts
        assert np.allclose(after, before, atol=1e-6)
        assert not os.path.exists(segment)  # the launcher unlinked the dead one's segment
        new_pid = _executor_pid(handle.proc.pid)
        assert new_pid != pid and glob.glob(f"/dev/shm/ggserve-*-executor0-{new_pid}")
        run_prefix = segment.rsplit("-executor0-", 1)[0]
    assert not glob.glob(f"{run_prefix}-*")  # stopped: nothing left in /dev/shm


# ----------------------------------------------------------------------------- reranking

QUERY = "what do cats eat"
DOCUMENTS = ["Cats eat fish and meat.", "The stock market fell.", "Kittens like milk.", "Paris is in France.",
             "Cats eat fish and meat."]


@pytest.fixture(scope="module")
def rerank_url():
    with start_server("-m", tiny_reranker_gguf(), "--reranking", "-np", "8") as handle:
        yield handle.base_url


def reference_scores(hf_tokenizer: HfTokenizer) -> list[float]:
    """[CLS] query [SEP] document: llama-server's pair layout for a BERT vocabulary."""
    reference = BertReference(tiny_reranker_weights(), n_head=TINY_HEADS)
    query = hf_tokenizer.encode(QUERY, add_special_tokens=False).ids
    return [reference.rank_score([101, *query, 102, *hf_tokenizer.encode(d, add_special_tokens=False).ids])
            for d in DOCUMENTS]


def test_rerank_scores_order_and_top_n(rerank_url: str, hf_tokenizer: HfTokenizer):
    expected = reference_scores(hf_tokenizer)
    for route in ("/v1/rerank", "/rerank", "/v1/reranking"):
        body = post(f"{rerank_url}{route}", json={"query": QUERY, "documents": DOCUMENTS}).json()
        results = body["results"]
        assert sorted(r["index"] for r in results) == list(range(len(DOCUMENTS)))
        scores = [r["relevance_score"] for r in results]
        assert scores == sorted(scores, reverse=True)
        assert np.allclose([expected[r["index"]] for r in results], scores, atol=1e-3)
        assert body["usage"]["prompt_tokens"] > 0 and "document" not in results[0]
    by_index = {r["index"]: r["relevance_score"] for r in results}
    assert by_index[0] == pytest.approx(by_index[4], abs=1e-6)  # the same pair scores the same anywhere
    top = post(f"{rerank_url}/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS, "top_n": 2,
                                                      "return_documents": True}).json()["results"]
    assert [r["index"] for r in top] == [r["index"] for r in results[:2]]
    assert top[0]["document"] == {"text": DOCUMENTS[top[0]["index"]]}


def test_cohere_v2_path_and_max_tokens_per_doc(rerank_url: str):
    v1 = post(f"{rerank_url}/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS}).json()["results"]
    v2 = post(f"{rerank_url}/v2/rerank", json={"model": "m", "query": QUERY, "documents": DOCUMENTS}).json()["results"]
    assert v2 == v1
    assert post(f"{rerank_url}/v2/rerank", json={"query": QUERY, "documents": DOCUMENTS, "top_n": 0}).json()[
        "results"] == v1  # vLLM's default top_n, 0: all of them
    assert post(f"{rerank_url}/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS, "top_n": 0}).json()[
        "results"] == []  # llama-server's reading
    cut = post(f"{rerank_url}/v2/rerank", json={"query": QUERY, "documents": DOCUMENTS[:1],
                                                "max_tokens_per_doc": 2}).json()["results"][0]["relevance_score"]
    first_two = post(f"{rerank_url}/tokenize", json={"content": DOCUMENTS[0]}).json()["tokens"][:2]
    text = post(f"{rerank_url}/detokenize", json={"tokens": first_two}).json()["content"]
    assert cut == pytest.approx(post(f"{rerank_url}/v2/rerank", json={"query": QUERY, "documents": [text]})
                                .json()["results"][0]["relevance_score"], abs=1e-5)
    assert cut != pytest.approx(v1[[r["index"] for r in v1].index(0)]["relevance_score"], abs=1e-3)


def test_rerank_in_tei_shape(rerank_url: str):
    tei = post(f"{rerank_url}/rerank", json={"query": QUERY, "texts": DOCUMENTS, "return_text": True}).json()
    assert isinstance(tei, list) and {"index", "score", "text"} <= set(tei[0])
    assert tei[0]["text"] == DOCUMENTS[tei[0]["index"]]


@pytest.mark.parametrize("body, message", [
    ({"query": QUERY}, '"documents" must be a non-empty list'),
    ({"query": QUERY, "documents": []}, '"documents" must be a non-empty list'),
    ({"documents": ["d"]}, "query"),
    ({"query": QUERY, "documents": ["d", 5]}, "documents"),
    ({"query": QUERY, "documents": ["word " * 600]}, "the pair of the query and documents[0] has"),
    ({"query": "word " * 600, "documents": ["cats"]}, "the pair of the query and documents[0] has"),
])
def test_bad_rerank_requests_are_400(rerank_url: str, body: dict, message: str):
    r = post(f"{rerank_url}/v1/rerank", json=body)
    assert r.status_code == 400 and message in r.json()["error"]["message"], r.text


def test_a_declared_rerank_template_formats_the_pair():
    from frontend.routes.pooling.rerank import pair_tokens
    from frontend.text.tokenizer import Tokenizer

    tokenizer = Tokenizer(tiny_reranker_gguf())
    try:
        template = "[CLS] query: {query} [SEP] document: {document} [SEP]"
        assert pair_tokens(tokenizer, template, "cats", "fish") == tokenizer.tokenize(
            "[CLS] query: cats [SEP] document: fish [SEP]", add_special=False, parse_special=True)
        assert pair_tokens(tokenizer, None, "cats", "fish")[0] == 101  # [CLS] query [SEP] document
    finally:
        tokenizer.close()


def _sigmoid(x: float) -> float:
    return 1 / (1 + np.exp(-x))


def test_vllm_score_on_a_reranker_is_the_rank_heads_score_through_the_sigmoid(rerank_url: str,
                                                                              hf_tokenizer: HfTokenizer):
    expected = reference_scores(hf_tokenizer)
    for route in ("/score", "/v1/score"):
        r = post(f"{rerank_url}{route}", json={"model": "m", "text_1": QUERY, "text_2": DOCUMENTS})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "list" and body["id"].startswith("score-") and body["usage"]["prompt_tokens"] > 0
        assert [(d["index"], d["object"]) for d in body["data"]] == [(i, "score") for i in range(len(DOCUMENTS))]
        assert np.allclose([d["score"] for d in body["data"]], [_sigmoid(x) for x in expected], atol=5e-4)
    raw = post(f"{rerank_url}/score", json={"queries": QUERY, "documents": DOCUMENTS, "use_activation": False}).json()
    assert np.allclose([d["score"] for d in raw["data"]], expected, atol=1e-3)  # /v1/rerank's relevance_score
    # N:N pairs item by item: each pair scores as it does alone
    pairwise = post(f"{rerank_url}/score", json={"data_1": [QUERY, "stocks"], "data_2": DOCUMENTS[:2]}).json()["data"]
    alone = post(f"{rerank_url}/score", json={"text_1": "stocks", "text_2": DOCUMENTS[1]}).json()["data"]
    assert pairwise[0]["score"] == pytest.approx(_sigmoid(expected[0]), abs=5e-4)
    assert pairwise[1]["score"] == pytest.approx(alone[0]["score"], abs=1e-5)


@pytest.mark.parametrize("body, param", [
    ({"text_1": ["a", "b"], "text_2": ["c", "d", "e"]}, "text_1"),
    ({"text_1": "a"}, "text_2"),
    ({"text_1": "a", "text_2": []}, "text_2"),
    ({"text_1": "a", "queries": "b", "text_2": "c"}, "text_1"),
    ({"text_1": "a", "text_2": "b", "priority": 1}, "priority"),
    ({"text_1": "word " * 600, "text_2": "c"}, "text_2"),
    ({"text_1": "word " * 600, "text_2": "c", "truncate_prompt_tokens": 8}, "truncate_prompt_tokens"),
])
def test_bad_score_requests_are_400_naming_the_field(rerank_url: str, body: dict, param: str):
    r = post(f"{rerank_url}/score", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_score_truncate_prompt_tokens_cuts_the_document_to_fit(rerank_url: str):
    long_document = "cats eat fish " * 200
    assert post(f"{rerank_url}/score", json={"text_1": QUERY, "text_2": long_document}).status_code == 400
    r = post(f"{rerank_url}/score", json={"text_1": QUERY, "text_2": long_document, "truncate_prompt_tokens": 32})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] <= 32, r.text
    assert post(f"{rerank_url}/score", json={"text_1": QUERY, "text_2": long_document,
                                             "truncate_prompt_tokens": -1}).status_code == 200


def test_vllm_score_on_an_embedding_server_is_the_cosine_similarity(minilm_url: str):
    vectors = np.array([d["embedding"] for d in post(f"{minilm_url}/v1/embeddings",
                                                     json={"input": SENTENCES[:3]}).json()["data"]])
    one_to_many = post(f"{minilm_url}/v1/score", json={"text_1": SENTENCES[0], "text_2": SENTENCES[1:3]}).json()
    assert np.allclose([d["score"] for d in one_to_many["data"]], vectors[1:3] @ vectors[0], atol=1e-4)
    assert one_to_many["data"][0]["score"] > one_to_many["data"][1]["score"]  # eating food ~ eating bread
    pairwise = post(f"{minilm_url}/score", json={"text_1": SENTENCES[:2], "text_2": SENTENCES[1:3]}).json()["data"]
    assert np.allclose([d["score"] for d in pairwise], [vectors[0] @ vectors[1], vectors[1] @ vectors[2]], atol=1e-4)
