"""POST /v1/responses, GET and DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items:
OpenAI's Responses API over the chat path (and llama-server's POST /v1/responses/input_tokens).

The input items (after those of ``previous_response_id``'s conversation) become chat messages:
messages, function calls and their outputs as tool calls and results, reasoning items as the
next assistant turn's reasoning; ``instructions`` is the system message. The request runs
through ``frontend.conversation`` like any chat completion, and the reply's blocks come back as
output items (reasoning, message, function_call), streamed with the Responses event sequence.
A response is stored (``frontend.response_store``) unless ``store`` is false.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import msgspec

from frontend import conversation
from frontend.api import responses as api
from frontend.api import schemas as chat
from frontend.conversation import MULTIMODAL, ChatRun, Reply
from frontend.generation import ChoiceDelta, ChoiceResult, TokenText, collect
from frontend.http import sse
from frontend.http.asgi import Request, Response, StreamResponse, json_response
from frontend.http.errors import ApiError, invalid
from frontend.reply_blocks import Block, BlockEvent, ReplyBlocks, reply_blocks
from frontend.response_store import StoredResponse
from frontend.routes.generation.chat import token_logprobs
from frontend.state import Frontend
from frontend.timings import progress_json, progress_timings

Items = list[dict[str, Any]]

PARAMETERS = ({"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},)  # /openapi.json
LIST_PARAMETERS = (*PARAMETERS, *({"name": name, "in": "query", "schema": schema} for name, schema in (
    ("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}),
    ("order", {"type": "string", "enum": ["asc", "desc"], "default": "desc"}),
    ("after", {"type": "string"}))))
# The id prefixes OpenAI gives its items, for the input items that came without an id.
_ITEM_ID_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}


def _decode_item(raw: dict[str, Any], param: str) -> api.InputItem:
    kind = raw.get("type", "message")
    item_type = api.ITEM_TYPES.get(kind) if isinstance(kind, str) else None
    if item_type is None:
        raise invalid(f"{param}: items of type {kind!r} are not supported (only {', '.join(api.ITEM_TYPES)})",
                      param=f"{param}.type")
    try:
        return msgspec.convert(raw, item_type)
    except msgspec.ValidationError as exc:
        raise invalid(f"{param}: {exc}", param=param) from None


def _text(parts: str | list[Any], param: str) -> str:
    if isinstance(parts, str):
        return parts
    texts = []
    for j, part in enumerate(parts):
        if isinstance(part, api.InputImage):
            raise invalid(MULTIMODAL, param=f"{param}[{j}]")
        texts.append(part.refusal if isinstance(part, api.Refusal) else part.text)
    return "\n".join(texts)


def chat_messages(items: list[api.InputItem], params: list[str]) -> list[chat.ChatMessage]:
    """Items as chat turns: an assistant turn gathers the message and calls that follow each
    other, with the reasoning item before them."""
    messages: list[chat.ChatMessage] = []
    turn: chat.ChatMessage | None = None  # the assistant turn being gathered
    reasoning = ""
    for item, param in zip(items, params, strict=True):
        if isinstance(item, api.ReasoningItem):
            reasoning += "".join(part.text for part in item.content or item.summary) or unseal(item.encrypted_content)
            turn = None
        elif isinstance(item, api.FunctionCallItem) or (isinstance(item, api.MessageItem) and item.role == "assistant"):
            text = _text(item.content, f"{param}.content") if isinstance(item, api.MessageItem) else ""
            if turn is None or (text and turn.tool_calls):  # text after calls starts another turn
                turn = chat.ChatMessage(role="assistant", content="", reasoning_content=reasoning or None)
                messages.append(turn)
                reasoning = ""
            turn.content = f"{turn.content}{text}"
            if isinstance(item, api.FunctionCallItem):
                function = chat.FunctionCall(name=item.name, arguments=item.arguments)
                call = chat.ToolCall(id=item.call_id, function=function)
                turn.tool_calls = [*(turn.tool_calls or []), call]
        elif isinstance(item, api.FunctionCallOutputItem):
            turn = None
            messages.append(chat.ChatMessage(role="tool", tool_call_id=item.call_id,
                                             content=_text(item.output, f"{param}.output")))
        else:
            turn = None
            messages.append(chat.ChatMessage(role=item.role, content=_input_content(item.content, f"{param}.content")))
    return messages


def _input_content(parts: str | list[Any], param: str) -> str | list[chat.ContentPart]:
    """A user (or system) message: its text, or text and image parts in order (frontend.media.files)."""
    if isinstance(parts, str) or not any(isinstance(part, api.InputImage) for part in parts):
        return _text(parts, param)
    content: list[chat.ContentPart] = []
    for j, part in enumerate(parts):
        if not isinstance(part, api.InputImage):
            content.append(chat.TextPart(_text([part], param)))
        elif part.image_url is None:
            raise invalid("an input_image needs image_url (a data: URI, or http(s) with --allow-remote-media); "
                          "file ids are not supported", param=f"{param}[{j}]")
        else:
            content.append(chat.ImagePart(chat.ImageUrl(url=part.image_url)))
    return content


def chat_request(body: api.ResponsesRequest, items: Items, n_stored: int) -> chat.ChatCompletionRequest:
    """The conversation (``n_stored`` items from the previous response, then the input) as a
    chat completion request."""
    params = [f"previous_response_id items[{i}]" for i in range(n_stored)]
    params += [f"input[{i}]" for i in range(len(items) - n_stored)]
    messages = chat_messages([_decode_item(raw, p) for raw, p in zip(items, params, strict=True)], params)
    if not messages:
        raise invalid("input must not be empty", param="input")
    if body.instructions:
        messages.insert(0, chat.ChatMessage(role="system", content=body.instructions))
    if body.background:
        raise invalid("background responses are not supported", param="background")
    tools = [chat.Tool(function=chat.FunctionDef(name=t.name, description=t.description, parameters=t.parameters,
                                                 strict=t.strict)) for t in body.tools or []]
    choice = body.tool_choice
    fmt = body.text.format if body.text is not None else None
    response_format = None
    if fmt is not None and fmt.type != "text":
        if fmt.type == "json_schema" and fmt.schema is None:
            raise invalid("text.format of type json_schema needs a schema", param="text.format.schema")
        named = chat.JsonSchemaFormat(name=fmt.name, description=fmt.description, schema=fmt.schema,
                                      strict=fmt.strict)
        response_format = chat.ResponseFormat(type=fmt.type, schema=fmt.schema) if fmt.type == "json_object" \
            else chat.ResponseFormat(type=fmt.type, json_schema=named)
    return chat.ChatCompletionRequest(
        messages=messages, max_tokens=body.max_output_tokens, temperature=body.temperature, top_p=body.top_p,
        tools=tools or None, parallel_tool_calls=body.parallel_tool_calls, response_format=response_format,
        tool_choice=chat.NamedToolChoice(function=chat.NamedFunction(choice.name))
        if isinstance(choice, api.FunctionToolChoice) else choice,
        reasoning_effort=body.reasoning.effort if body.reasoning is not None else None, stream=body.stream,
        timings_per_token=body.timings_per_token, return_progress=body.return_progress,
        **{name: getattr(body, name) for name in chat.ChatPassThrough.__struct_fields__})


def _item(response_id: str, block: Block, status: api.Status, sealed: bool = False,
          logprobs: list[chat.ChatTokenLogprob] | None = None) -> api.OutputItem:
    """A block as an output item; while in progress, without its text (as an item is announced);
    ``sealed``: a reasoning item carries its reasoning as encrypted_content too; ``logprobs``: a
    message's text part carries them."""
    item_id = f"{_ITEM_PREFIX[block.kind]}_{response_id.removeprefix('resp_')}_{block.index}"
    done = status != "in_progress"
    if block.kind == "text":
        part = api.OutputTextPart(block.text, logprobs=logprobs or [])
        return api.OutputMessage(id=item_id, content=[part] if done else [], status=status)
    if block.kind == "thinking":
        return api.OutputReasoning(id=item_id, content=[api.ReasoningTextPart(block.text)] if done else [],
                                   status=status,
                                   encrypted_content=seal(block.text) if sealed and done else msgspec.UNSET)
    return api.OutputFunctionCall(id=item_id, call_id=block.call_id, name=block.name, arguments=block.text,
                                  status=status)


_ITEM_PREFIX = {"text": "msg", "thinking": "rs", "tool_call": "fc"}
_SEAL = "ggserve-reasoning:"


def seal(reasoning: str) -> str:
    """A reasoning item's encrypted_content: the reasoning itself, encoded (the response shows it
    anyway), so that a client keeping no state gets it back into the conversation."""
    return _SEAL + base64.b64encode(reasoning.encode()).decode()


def unseal(content: str | None) -> str:
    """The reasoning in an encrypted_content that ``seal`` wrote; "" for another server's."""
    if not content or not content.startswith(_SEAL):
        return ""
    try:
        return base64.b64decode(content.removeprefix(_SEAL), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return ""


def logprobs_asked(body: api.ResponsesRequest) -> int:
    """``AddRequest.logprobs`` for the output text's logprobs (include
    "message.output_text.logprobs", or top_logprobs alone): the chosen token's and the k most
    likely; -1: none."""
    if "message.output_text.logprobs" in (body.include or ()) or body.top_logprobs is not None:
        return body.top_logprobs or 0
    return -1


def text_tokens(result: ChoiceResult, blocks: list[Block]) -> dict[int, list[TokenText]]:
    """The tokens of each text block of a reply read whole: those the block's text begins in,
    found in the output from its end (the answer follows the reasoning, and precedes calls)."""
    out: dict[int, list[TokenText]] = {}
    end = len(result.text)
    for block in reversed(blocks):
        if block.kind != "text" or not block.text:
            continue
        start = result.text.rfind(block.text, 0, end)
        if start < 0:
            continue
        out[block.index] = [t for t in result.tokens if start <= t.offset < start + len(block.text)]
        end = start
    return out


class _Turn:
    """One response's making: the request, its conversation so far, and the finished Response."""

    def __init__(self, fe: Frontend, body: api.ResponsesRequest, response_id: str, items: Items,
                 run: ChatRun) -> None:
        self.fe, self.body, self.id, self.items, self.run = fe, body, response_id, items, run
        self.created = int(time.time())
        self.sealed = "reasoning.encrypted_content" in (body.include or ())
        self.logprobs = logprobs_asked(body) >= 0

    def response(self, status: api.Status, output: list[api.OutputItem] | None = None,
                 usage: api.ResponseUsage | None = None) -> api.Response:
        body = self.body
        finished = status != "in_progress"
        return api.Response(
            id=self.id, created_at=self.created, status=status, model=self.fe.model_id, output=output or [],
            usage=usage, instructions=body.instructions, max_output_tokens=body.max_output_tokens,
            metadata=body.metadata or {}, parallel_tool_calls=body.parallel_tool_calls,
            previous_response_id=body.previous_response_id, reasoning=body.reasoning or api.ReasoningConfig(),
            store=body.store, temperature=body.temperature,
            text=body.text or api.TextConfig(format=api.TextFormat(type="text")),
            tool_choice=body.tool_choice or ("auto" if body.tools else "none"), tools=body.tools or [],
            top_p=body.top_p, top_logprobs=body.top_logprobs,
            incomplete_details=api.IncompleteDetails("max_output_tokens") if status == "incomplete" else None,
            completed_at=int(time.time()) if finished else None)

    def finish(self, blocks: list[Block], finish_reason: str, tokens: dict[int, list[TokenText]]) -> api.Response:
        """The finished response (stored unless ``store`` is false); ``tokens``: those of each
        text block, whose logprobs its part carries when they were asked for."""
        gen = self.run.gen
        usage = gen.usage()
        reasoning = "".join(b.text for b in blocks if b.kind == "thinking")
        n_reasoning = len(self.fe.tokenizer.tokenize(reasoning, add_special=False, parse_special=True)) \
            if reasoning else 0
        status: api.Status = "incomplete" if finish_reason == "length" else "completed"
        output = [_item(self.id, b, _block_status(b, blocks, status), self.sealed,
                        self.text_logprobs(tokens.get(b.index))) for b in blocks]
        response = self.response(status, output, api.ResponseUsage(
            usage.prompt_tokens, api.InputTokensDetails(usage.prompt_tokens_details.cached_tokens),
            usage.completion_tokens, api.OutputTokensDetails(n_reasoning), usage.total_tokens))
        if self.body.store:
            self.fe.responses.put(StoredResponse(response, self.items + msgspec.to_builtins(output)))
        return response

    def text_logprobs(self, tokens: list[TokenText] | None) -> list[chat.ChatTokenLogprob] | None:
        return token_logprobs(tokens) if self.logprobs and tokens else None


class _ResponseStream:
    """The Responses event sequence: response.created, response.in_progress, then per output item
    output_item.added, its content or arguments (added, deltas, done), output_item.done, and
    response.completed (response.incomplete when cut by max_output_tokens); each event numbered."""

    def __init__(self, turn: _Turn) -> None:
        self._turn = turn
        self._parser = turn.run.parsers[0]
        self._blocks = ReplyBlocks()
        self._finish_reason = "stop"
        self._seq = 0
        # with logprobs: the tokens not yet given to a text delta, those each text block got, and
        # this step's text delta that carries them (its BlockEvent)
        self._pending: list[TokenText] = []
        self._tokens: dict[int, list[TokenText]] = {}
        self._carrier: tuple[BlockEvent, list[TokenText]] | None = None

    def _event(self, type_: str, **fields: Any) -> bytes:
        return sse.named_event(type_, self._data(type_, **fields))

    def _data(self, type_: str, **fields: Any) -> api.ResponseStreamEvent:
        event = api.ResponseStreamEvent(type=type_, sequence_number=self._seq, **fields)
        self._seq += 1
        return event

    def head(self) -> list[bytes]:
        response = self._turn.response("in_progress")
        return [self._event("response.created", response=response),
                self._event("response.in_progress", response=response)]

    def render(self, delta: ChoiceDelta) -> list[bytes]:
        out = []
        if delta.progress is not None:  # llama-server's: the prefill's progress, as the response is in progress
            timings = progress_timings(delta.progress) if self._turn.body.timings_per_token else None
            out.append(self._event("response.in_progress", response=self._turn.response("in_progress"),
                                   prompt_progress=progress_json(delta.progress), timings=timings))
        events = self._blocks.feed(conversation.parse_delta(self._parser, delta))
        if delta.finish_reason is not None:
            events += self._blocks.close()
            self._finish_reason = conversation.finish_reason(delta.finish_reason, self._parser)
        self._attribute(delta.tokens, events)
        data = [e for event in events for e in self._block_events(event)]
        if data and self._turn.body.timings_per_token:  # on the step's last event, as llama-server puts them
            data[-1].timings = self._turn.run.gen.timings()
        return out + [sse.named_event(d.type, d) for d in data]

    def _attribute(self, tokens: list[TokenText], events: list[BlockEvent]) -> None:
        """The step's tokens (and those held back before) go to its last text delta; a step that
        only writes reasoning or a call's arguments had tokens of those, which carry none."""
        self._pending += tokens
        self._carrier = None
        texts = [e for e in events if e.kind == "delta" and e.block.kind == "text"]
        if texts:
            self._carrier = (texts[-1], self._pending)
            self._tokens.setdefault(texts[-1].block.index, []).extend(self._pending)
            self._pending = []
        elif any(e.kind == "delta" for e in events):
            self._pending = []

    def tail(self) -> list[bytes]:
        response = self._turn.finish(self._blocks.blocks, self._finish_reason, self._tokens)
        return [self._event(f"response.{response.status}", response=response, timings=self._turn.run.gen.timings())]

    def error(self, exc: ApiError) -> bytes:
        return self._event("error", code=exc.type, message=exc.message, param=exc.param)

    def _block_events(self, event: BlockEvent) -> list[api.ResponseStreamEvent]:
        block, turn_id = event.block, self._turn.id
        where: dict[str, Any] = {"output_index": block.index, "item_id": _item(turn_id, block, "in_progress").id}
        content = {**where, "content_index": 0}
        if event.kind == "start":
            out = [self._data("response.output_item.added", output_index=block.index,
                               item=_item(turn_id, Block(block.index, block.kind, "", block.call_id, block.name),
                                          "in_progress"))]
            if block.kind != "tool_call":
                out.append(self._data("response.content_part.added", **content, part=_part(block.kind, "")))
            return out
        if event.kind == "delta":
            if block.kind == "text":
                carried = self._carrier[1] if self._carrier is not None and self._carrier[0] is event else None
                return [self._data("response.output_text.delta", **content, delta=event.text,
                                   logprobs=self._turn.text_logprobs(carried) or [])]
            if block.kind == "thinking":
                return [self._data("response.reasoning_text.delta", **content, delta=event.text)]
            return [self._data("response.function_call_arguments.delta", **where, delta=event.text)]
        logprobs = self._turn.text_logprobs(self._tokens.get(block.index))
        if block.kind == "tool_call":
            out = [self._data("response.function_call_arguments.done", **where, name=block.name,
                               arguments=block.text)]
        elif block.kind == "text":
            out = [self._data("response.output_text.done", **content, text=block.text, logprobs=logprobs or [])]
        else:
            out = [self._data("response.reasoning_text.done", **content, text=block.text)]
        if block.kind != "tool_call":
            out.append(self._data("response.content_part.done", **content,
                                  part=_part(block.kind, block.text, logprobs)))
        status: api.Status = "incomplete" if self._finish_reason == "length" else "completed"
        out.append(self._data("response.output_item.done", output_index=block.index,
                               item=_item(turn_id, block, _block_status(block, self._blocks.blocks, status),
                                          self._turn.sealed, logprobs)))
        return out


def _block_status(block: Block, blocks: list[Block], status: api.Status) -> api.Status:
    """An item's status: the response's last item is incomplete when max_output_tokens cut the
    response (OpenAI's reading), every other item completed."""
    return "incomplete" if status == "incomplete" and block is blocks[-1] else "completed"


def _part(kind: str, text: str, logprobs: list[chat.ChatTokenLogprob] | None = None
          ) -> api.OutputTextPart | api.ReasoningTextPart:
    return api.OutputTextPart(text, logprobs=logprobs or []) if kind == "text" else api.ReasoningTextPart(text)


def _not_found(response_id: str, param: str | None = None) -> ApiError:
    return ApiError(404, f"no stored response with id {response_id!r} (unknown, deleted, evicted, or made "
                         "with store: false)", param=param)


def _stored(fe: Frontend, response_id: str, param: str | None = None) -> StoredResponse:
    stored = fe.responses.get(response_id)
    if stored is None:
        raise _not_found(response_id, param)
    return stored


def _conversation(fe: Frontend, body: api.ResponsesRequest) -> tuple[Items, int]:
    """The items of the response's conversation (those of ``previous_response_id`` first) and
    how many came from there."""
    stored = [] if body.previous_response_id is None else \
        _stored(fe, body.previous_response_id, "previous_response_id").items
    given = [{"role": "user", "content": body.input}] if isinstance(body.input, str) else body.input
    return stored + given, len(stored)


async def create(fe: Frontend, req: Request) -> Response | StreamResponse:
    body = req.decode(api.ResponsesRequest)
    items, n_stored = _conversation(fe, body)
    run = await conversation.start(fe, req, chat_request(body, items, n_stored), logprobs_asked(body))
    turn = _Turn(fe, body, f"resp_{req.id}", items, run)
    if body.stream:
        stream = _ResponseStream(turn)
        return StreamResponse(sse.generation_events(run.gen, stream.head, stream.render, stream.tail, done=False,
                                                    on_error=stream.error), error_event=stream.error)
    result = (await collect(run.gen))[0]
    reply: Reply = conversation.read_reply(run.parsers[0], result)
    blocks = reply_blocks(reply)
    return json_response(turn.finish(blocks, reply.finish_reason, text_tokens(result, blocks)))


async def input_tokens(fe: Frontend, req: Request) -> Response:
    """How many prompt tokens a response request would submit, without generating
    (llama-server's /v1/responses/input_tokens)."""
    body = req.decode(api.ResponsesRequest)
    items, n_stored = _conversation(fe, body)
    _, prompt = await conversation.prompt_tokens(fe, req, chat_request(body, items, n_stored))
    return json_response(chat.InputTokenCount(len(prompt.tokens)))


async def retrieve(fe: Frontend, req: Request) -> Response:
    return json_response(_stored(fe, req.path.rpartition("/")[2]).response)


async def delete(fe: Frontend, req: Request) -> Response:
    response_id = req.path.rpartition("/")[2]
    if not fe.responses.delete(response_id):
        raise _not_found(response_id)
    return json_response(api.DeletedResponse(response_id))


async def input_items(fe: Frontend, req: Request) -> Response:
    """The items a stored response was generated from, as OpenAI lists them: those of its
    ``previous_response_id`` chain (their outputs included) and its own input, each with an id
    (those given, or one made from the response's id and the item's place, the same at every
    call), newest first unless ``order=asc``, ``limit`` (1-100, default 20) at a time after the
    item ``after``."""
    response_id = req.path.split("/")[-2]
    stored = _stored(fe, response_id)
    given = stored.items[: len(stored.items) - len(stored.response.output)]
    items = [_listed_item(item, response_id, i) for i, item in enumerate(given)]
    try:
        limit = int(req.query.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise invalid("limit must be an integer from 1 to 100", param="limit")
    order = req.query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid("order must be 'asc' or 'desc'", param="order")
    if order == "desc":
        items.reverse()
    if "after" in req.query:
        ids = [item["id"] for item in items]
        if req.query["after"] not in ids:
            raise invalid(f"no input item {req.query['after']!r} in response {response_id!r}", param="after")
        items = items[ids.index(req.query["after"]) + 1 :]
    page = items[:limit]
    return json_response(api.ResponseItemList(page, page[0]["id"] if page else None,
                                              page[-1]["id"] if page else None, len(items) > limit))


def _listed_item(item: dict[str, Any], response_id: str, index: int) -> dict[str, Any]:
    """An input item in its listed form: typed, with an id; a message's text as content parts."""
    kind = item.get("type", "message")
    listed = {**item, "type": kind}
    if kind == "message":
        content = item.get("content")
        if isinstance(content, str):
            assistant = item.get("role") == "assistant"
            part = {"type": "output_text", "text": content, "annotations": []} if assistant else \
                {"type": "input_text", "text": content}
            listed["content"] = [part]
        listed.setdefault("status", "completed")
    if not listed.get("id"):
        digest = hashlib.sha256(f"{response_id}/{index}".encode()).hexdigest()[:32]
        listed["id"] = f"{_ITEM_ID_PREFIXES.get(kind, 'item')}_{digest}"
    return listed
