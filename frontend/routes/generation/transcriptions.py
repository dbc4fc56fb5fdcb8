"""POST /v1/audio/transcriptions and /audio/transcriptions: OpenAI's speech-to-text over the chat
path, as llama-server does it.

The multipart form's ``file`` (WAV, MP3 or FLAC) and llama.cpp's ASR prompt ("Transcribe audio to
text"; the form's ``prompt`` in its place; " (language: X)" added for ``language``) become one
user turn, text then audio, run through ``frontend.conversation``. It needs a projector with an
audio encoder (--mmproj): without one the answer is llama-server's 501. Form fields: ``model``,
``prompt``, ``language``, ``response_format`` (json, or text: the bare text), ``temperature``,
``max_tokens``, ``stream`` ("true": ``transcript.text.delta`` events, then
``transcript.text.done`` and ``[DONE]``). OpenAI's other fields (timestamps, logprobs, chunking,
speakers) are a 400 naming them, where llama-server ignores them.
"""

from __future__ import annotations

import base64

import msgspec

from frontend import conversation
from frontend.api.schemas import ChatCompletionRequest
from frontend.api.transcriptions import InputTokensDetails, Transcription, TranscriptionDelta, TranscriptionUsage
from frontend.conversation import ChatRun
from frontend.generation import ChoiceDelta, Generation, collect
from frontend.http import multipart, sse
from frontend.http.asgi import Request, Response, StreamResponse, json_response
from frontend.http.errors import ApiError, invalid
from frontend.media.files import sniff
from frontend.state import Frontend

ASR_PROMPT = "Transcribe audio to text"  # llama.cpp's (common_chat_get_asr_prompt)
LFM2_MARKERS = ("<|tool_list_start|>", "<|tool_list_end|>")  # LFM2's templates get a system turn instead
FIELDS = frozenset({"file", "model", "prompt", "language", "response_format", "temperature", "max_tokens", "stream"})
AUDIO_FORMATS = ("wav", "mp3", "flac")
RESPONSE_FORMATS = ("json", "text")


def _number(form: multipart.Form, name: str, kind: type[int] | type[float]) -> int | float | None:
    text = form.fields.get(name)
    if text is None:
        return None
    try:
        return kind(text)
    except ValueError:
        raise invalid(f"{name} is not a{'n integer' if kind is int else ' number'}: {text!r}", param=name) from None


def chat_request(fe: Frontend, form: multipart.Form) -> ChatCompletionRequest:
    """The form as a chat completion request (llama-server's conversion)."""
    unknown = sorted((form.fields.keys() | form.files.keys()) - FIELDS)
    if unknown:
        raise invalid(f"{unknown[0]} is not supported by this server's transcriptions", param=unknown[0])
    if "file" not in form.files:
        raise invalid("No input file found for transcription", param="file")
    data = form.files["file"][1]
    found = sniff(data)
    if found is None or found[0] != "audio" or found[1] not in AUDIO_FORMATS:
        raise invalid("file is not audio this server reads: WAV, MP3 or FLAC", param="file")
    if form.fields.get("response_format", "json") not in RESPONSE_FORMATS:
        raise invalid(f"response_format is one of {', '.join(RESPONSE_FORMATS)}", param="response_format")
    stream = form.fields.get("stream", "false")
    if stream not in ("true", "false"):
        raise invalid("stream is true or false", param="stream")
    system, prompt = ("Perform ASR.", "") if all(m in fe.template.source for m in LFM2_MARKERS) else ("", ASR_PROMPT)
    prompt = form.fields.get("prompt") or prompt
    if form.fields.get("language"):
        prompt += f" (language: {form.fields['language']})"
    audio = {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": found[1]}}
    messages = [*([{"role": "system", "content": system}] if system else []),
                {"role": "user", "content": [{"type": "text", "text": prompt}, audio]}]
    settings = {name: value for name, value in (("temperature", _number(form, "temperature", float)),
                                                ("max_tokens", _number(form, "max_tokens", int))) if value is not None}
    try:
        return msgspec.convert({"messages": messages, "stream": stream == "true", **settings}, ChatCompletionRequest)
    except msgspec.ValidationError as exc:
        raise invalid(str(exc)) from None


def _usage(gen: Generation) -> TranscriptionUsage:
    usage = gen.usage()
    return TranscriptionUsage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens,
                              InputTokensDetails(usage.prompt_tokens_details.cached_tokens))


class _Stream:
    """Text deltas as they come, then the whole text with the usage."""

    def __init__(self, run: ChatRun) -> None:
        self._run = run
        self._text: list[str] = []

    def render(self, delta: ChoiceDelta) -> list[bytes]:
        text = conversation.parse_delta(self._run.parsers[0], delta).content
        self._text.append(text)
        return [sse.event(TranscriptionDelta(text))] if text else []

    def tail(self) -> list[bytes]:
        return [sse.event(Transcription("".join(self._text), _usage(self._run.gen)))]


async def transcriptions(fe: Frontend, req: Request) -> Response | StreamResponse:
    info = fe.multimodal.info if fe.multimodal is not None else None
    if info is None or not info.audio:
        raise ApiError(501, "The current model does not support audio input.")
    form = multipart.parse(req.headers.get("content-type", ""), req.body)
    body = chat_request(fe, form)
    try:
        run = await conversation.start(fe, req, body)
    except ApiError as exc:
        if exc.param == "messages[0].content[1]":  # the audio part made of the file
            exc.param = "file"
        raise
    if body.stream:
        stream = _Stream(run)
        return StreamResponse(sse.generation_events(run.gen, list, stream.render, stream.tail))
    result = (await collect(run.gen))[0]
    text = conversation.read_reply(run.parsers[0], result).content
    if form.fields.get("response_format") == "text":
        return Response(text.encode(), content_type=b"text/plain; charset=utf-8")
    return json_response(Transcription(text, _usage(run.gen)))
