"""--log-prompts-dir's files (frontend.observe.prompt_log) on the embedded model's vocabulary;
test_api_llama_flags checks them through a real server."""

from __future__ import annotations

import json

from frontend_support import gemma_path

from frontend.observe.prompt_log import PromptLog
from frontend.text.multimodal import MARKER
from frontend.text.tokenizer import Tokenizer
from ipc.protocol import media_token_id


def test_media_chunks_are_written_as_the_marker_and_names_never_collide(tmp_path) -> None:
    tokenizer = Tokenizer(gemma_path())
    log = PromptLog(str(tmp_path), tokenizer)
    before, after = (tokenizer.tokenize("Look:", add_special=True, parse_special=False),
                     tokenizer.tokenize(" and", add_special=False, parse_special=False))
    picture, clip = [media_token_id("a" * 64)] * 3, [media_token_id("b" * 64)] * 2
    log.write([before + picture + clip + after])  # two chunks side by side stay two
    log.write([before, after])
    log.write([before])
    files = sorted(tmp_path.iterdir())
    assert len(files) == 3  # written within the same millisecond or not
    texts = sorted(f.read_text() for f in files)
    assert texts[0] == "<bos>Look:" and texts[1] == f"<bos>Look:{MARKER}{MARKER} and"
    assert json.loads(texts[2]) == ["<bos>Look:", " and"]
