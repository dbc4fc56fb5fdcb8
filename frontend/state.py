"""What one HTTP worker holds: configuration, tokenizer, chat template, engine link, API keys,
the stored responses."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from frontend.http.auth import ApiKeys
from frontend.text.chat_template import ChatTemplate, load_chat_template
from frontend.engine_client import EngineClient
from frontend.http.errors import unavailable
from frontend.response_store import ResponseStore
from frontend.api.schemas import SamplingFields
from frontend.api.sampling import CacheDefaults, check_server_defaults, server_defaults, stop_strings
from frontend.structured.grammar import GrammarChecker
from frontend.structured.tool_formats.learned import template_format
from frontend.media.files import MediaLimits
from frontend.media.arena import MediaArena, arena_bytes
from frontend.text.multimodal import MediaTokenizer
from frontend.text.tokenizer import Tokenizer
from frontend.media.video import VideoDecoder
from frontend.observe.prompt_log import PromptLog
from ggserve.config import ServeConfig
from ipc.protocol import EngineInfo, SamplingParams

log = logging.getLogger(__name__)

T = TypeVar("T")

# Request bodies up to this size are tokenized on the event loop (well under a millisecond);
# larger ones in a thread, so a huge prompt does not stall this worker's other streams.
_INLINE_BODY_BYTES = 64 * 1024


@dataclass
class Frontend:
    cfg: ServeConfig
    tokenizer: Tokenizer
    template: ChatTemplate
    engine: EngineClient
    api_keys: ApiKeys
    started_at: int  # unix time, the "created" of /v1/models
    multimodal: MediaTokenizer | None = None  # --mmproj: prompts with images / audio / video

    @classmethod
    async def start(cls, cfg: ServeConfig) -> Frontend:
        # In a thread: in router mode a worker loads a model's vocabulary while serving others.
        tokenizer = await asyncio.to_thread(Tokenizer, cfg.model, cfg.kv_overrides)
        video = VideoDecoder(cfg, arena_bytes(cfg.media_max_bytes) // 2)  # half the arena: room to send the frames
        template = await asyncio.to_thread(load_chat_template, tokenizer, cfg.chat_template_file, cfg.chat_template)
        calls = await asyncio.to_thread(template_format, template.source)  # (learned here, not on a first request)
        log.info("tool calls: %s", f"the template's own syntax ({calls.name})" if calls is not None else
                 "a generic syntax taught in a system message (the template has no tool-call syntax known or learned)")
        frontend = cls(
            cfg=cfg,
            tokenizer=tokenizer,
            template=template,
            engine=EngineClient(cfg.scheduler_endpoint, cfg.curve),
            api_keys=ApiKeys(cfg.api_keys),
            started_at=int(time.time()),
            multimodal=await asyncio.to_thread(MediaTokenizer, tokenizer, cfg.mmproj, video, cfg.image_tokens)
            if cfg.mmproj else None,
        )
        # -l / --grammar / -j as the model reads them: a bad one stops the start, not every request
        check_server_defaults(frontend.sampling_defaults, tokenizer, frontend.grammars)
        await frontend.engine.start()
        return frontend

    async def close(self) -> None:
        await self.engine.close()
        if self.multimodal is not None:
            self.multimodal.close()
            self.media_arena.close()
        self.tokenizer.close()

    @functools.cached_property
    def media_limits(self) -> MediaLimits:
        if self.multimodal is None:
            return MediaLimits(self.cfg, False, False, None)
        info = self.multimodal.info
        return MediaLimits(self.cfg, info.vision, info.audio, self.multimodal.video.unavailable_reason)

    @functools.cached_property
    def media_arena(self) -> MediaArena:
        """Where this worker's requests put their media files for the executors (ipc.shm)."""
        return MediaArena(self.cfg.run_dir, self.cfg.media_max_bytes)

    @functools.cached_property
    def grammars(self) -> GrammarChecker:
        """Checks request grammars with this worker's vocabulary (and remembers the good ones)."""
        return GrammarChecker(self.tokenizer)

    @functools.cached_property
    def responses(self) -> ResponseStore:
        """Stored Responses API responses, shared by the HTTP workers (in the run directory)."""
        return ResponseStore(os.path.join(self.cfg.run_dir, "responses"))

    @functools.cached_property
    def prompt_log(self) -> PromptLog | None:
        """--log-prompts-dir: where generations' prompts are written (None: nowhere)."""
        return PromptLog(self.cfg.log_prompts_dir, self.tokenizer) if self.cfg.log_prompts_dir else None

    @functools.cached_property
    def sampling_defaults(self) -> SamplingParams:
        """llama-server's sampling defaults with this server's flags (--temp, --top-k, ...) applied."""
        return server_defaults(self.cfg)

    def written(self, markers: frozenset[int]) -> frozenset[int]:
        """The control tokens a reply writes as text: its format ``markers``, or every one with
        --special (llama-server's -sp)."""
        return self.tokenizer.hidden_ids if self.cfg.special else markers

    def fill_defaults(self, body: SamplingFields) -> None:
        """The server-wide defaults of request fields that are no sampler setting: --ignore-eos,
        and -r's stop strings for a request with none (or only empty ones), as llama-server."""
        if body.ignore_eos is None:
            body.ignore_eos = self.cfg.ignore_eos
        if self.cfg.stop and not any(stop_strings(body.stop)):
            body.stop = list(self.cfg.stop)

    @property
    def eog_ids(self) -> list[int]:
        """The model's end-of-generation tokens (banned by ``ignore_eos``); known once the engine is ready."""
        info = self.engine.info
        return info.executors[0].eog_token_ids if info is not None and info.executors else []

    @functools.cached_property
    def cache_defaults(self) -> CacheDefaults:
        """The server's n_keep and n_cache_reuse, and whether the vocabulary adds BOS."""
        return CacheDefaults(self.cfg.n_keep, self.cfg.cache_reuse, self.tokenizer.add_bos)

    @property
    def model_id(self) -> str:
        return self.cfg.model_alias

    async def prepare(self, body_size: int | None, work: Callable[[], T]) -> T:
        """Run a request's tokenizer-heavy preparation; off the event loop for large bodies, or
        always (``body_size`` None) (llama.cpp's tokenizer releases the GIL and may run in several
        threads at once)."""
        if body_size is not None and body_size <= _INLINE_BODY_BYTES:
            return work()
        return await asyncio.to_thread(work)

    def engine_info(self) -> EngineInfo:
        """The engine's facts; a 503 (retry later) while it is loading, restarting or draining."""
        reason = self.engine.unavailable_reason()
        if reason is not None:
            raise unavailable(reason)
        assert self.engine.info is not None
        return self.engine.info
