"""What one HTTP worker holds: configuration, tokenizer, chat template, engine link, API keys."""

from __future__ import annotations

import time
from dataclasses import dataclass

from frontend.auth import ApiKeys
from frontend.chat_template import ChatTemplate, load_chat_template
from frontend.engine_client import EngineClient
from frontend.errors import unavailable
from frontend.tokenizer import Tokenizer
from ggserve.config import ServeConfig
from ipc.protocol import EngineInfo


@dataclass
class Frontend:
    cfg: ServeConfig
    tokenizer: Tokenizer
    template: ChatTemplate
    engine: EngineClient
    api_keys: ApiKeys
    started_at: int  # unix time, the "created" of /v1/models

    @classmethod
    async def start(cls, cfg: ServeConfig) -> Frontend:
        tokenizer = Tokenizer(cfg.model)
        frontend = cls(
            cfg=cfg,
            tokenizer=tokenizer,
            template=load_chat_template(tokenizer, cfg.chat_template_file),
            engine=EngineClient(cfg.scheduler_endpoint),
            api_keys=ApiKeys(cfg.api_keys),
            started_at=int(time.time()),
        )
        await frontend.engine.start()
        return frontend

    async def close(self) -> None:
        await self.engine.close()
        self.tokenizer.close()

    @property
    def model_id(self) -> str:
        return self.cfg.model_alias

    def engine_info(self) -> EngineInfo:
        """The engine's facts; a 503 (retry later) while it is still loading."""
        info = self.engine.info
        if info is None:
            raise unavailable("the model is still loading")
        return info
