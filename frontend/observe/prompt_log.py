"""--log-prompts-dir (llama-server's debugging aid): each generation's prompt in a file of its own,
``<milliseconds since the epoch, 12 digits>.txt``, as the model reads it (a chat's rendered
template, control tokens written as their text, a picture or a clip as the media marker); the
prompts of a call with several as a JSON list. HTTP workers share the directory: a name already taken gets ``-1``, ``-2``, ... added."""

from __future__ import annotations

import itertools
import json
import logging
import os
import time

from frontend.text.multimodal import MARKER
from frontend.text.tokenizer import Tokenizer

log = logging.getLogger(__name__)


class PromptLog:
    def __init__(self, directory: str, tokenizer: Tokenizer) -> None:
        self.directory = directory
        self._tokenizer = tokenizer

    def _text(self, ids: list[int]) -> str:
        """A prompt's text, each media chunk (its positions carry negative ids) as the media marker."""
        runs = itertools.groupby(ids, key=lambda t: min(t, 0))  # 0: text; a media chunk: its own id
        return "".join(MARKER if key < 0 else self._tokenizer.detokenize(list(run)) for key, run in runs)

    def write(self, prompts: list[list[int]]) -> None:
        """Write one call's prompts (token ids); a failure is logged, the request goes on."""
        texts = [self._text(ids) for ids in prompts]
        body = texts[0] if len(texts) == 1 else json.dumps(texts, indent=2, ensure_ascii=False)
        stamp = f"{int(time.time() * 1000):012d}"
        try:
            for n in itertools.count():
                path = os.path.join(self.directory, f"{stamp}-{n}.txt" if n else f"{stamp}.txt")
                try:
                    with open(path, "x", encoding="utf-8") as f:
                        f.write(body)
                    return
                except FileExistsError:
                    continue
        except OSError as exc:
            log.error("--log-prompts-dir: cannot write %s: %s", path, exc.strerror)
