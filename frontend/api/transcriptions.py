"""OpenAI's /v1/audio/transcriptions shapes, as llama-server answers them: the result (also a
stream's last event) and the streamed text deltas."""

from __future__ import annotations

from typing import Literal

import msgspec


class InputTokensDetails(msgspec.Struct):
    cached_tokens: int


class TranscriptionUsage(msgspec.Struct):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: InputTokensDetails
    type: Literal["tokens"] = "tokens"


class Transcription(msgspec.Struct, tag="transcript.text.done", tag_field="type"):
    """The whole transcription (llama-server sends it with its stream event's type, streamed or not)."""

    text: str
    usage: TranscriptionUsage


class TranscriptionDelta(msgspec.Struct, tag="transcript.text.delta", tag_field="type"):
    delta: str
