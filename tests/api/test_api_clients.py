"""Clients users really run: langchain-openai's ChatOpenAI, invoke and stream."""

from __future__ import annotations

import langchain_openai


def test_langchain_chat_openai_invoke_and_stream(server):
    llm = langchain_openai.ChatOpenAI(base_url=f"{server.base_url}/v1", api_key="unused", model="gemma",
                                      temperature=0, max_tokens=8, max_retries=0)
    question = "What is the capital of France?"
    llm.invoke(question)  # caches the prompt: the next two run the same way (one batch shape, see design.md)
    answer = llm.invoke(question)
    assert answer.content
    assert answer.response_metadata["finish_reason"] in ("stop", "length")
    assert answer.usage_metadata["output_tokens"] > 0
    streamed = "".join(chunk.content for chunk in llm.stream(question))
    assert streamed == answer.content
