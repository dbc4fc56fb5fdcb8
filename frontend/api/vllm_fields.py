"""vLLM's extra request fields that ggserve does not implement: refused with a 400 that names them.

Clients written for ``vllm serve`` send vLLM's extras in ``extra_body``. The ones ggserve honours
are fields of the request schemas (frontend.api.schemas: ``guided_*``, ``structured_outputs``,
``min_tokens``, ``cache_salt``, ``repetition_penalty``, ``stop_token_ids``,
``include_stop_str_in_output``, ``add_special_tokens`` on /v1/completions, and on /v1/embeddings
``truncate_prompt_tokens``, ``add_special_tokens`` and ``normalize``); these are the rest,
refused like llama-server's unsupported fields (frontend.api.llama_fields, which checks both
tables): the value that means "off" (vLLM's default) is accepted, anything else is a 400.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _unset(value: Any) -> bool:
    return value is None or value is False or value == 0 or value == "" or value == [] or value == {}


# field -> (whether a value is the neutral one, why anything else is refused)
UNSUPPORTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "best_of": (lambda v: v in (None, 1), "no server-side best-of; ask for n choices and pick one"),
    "use_beam_search": (_unset, "no beam search"),
    "length_penalty": (lambda v: v in (None, 1, 1.0), "length_penalty applies to beam search, which ggserve does not do"),
    "allowed_token_ids": (_unset, "no token whitelist; a grammar (guided_grammar, guided_regex, guided_choice) "
                          "constrains the output"),
    "bad_words": (_unset, "no banned words; logit_bias can ban tokens"),
    "logits_processors": (_unset, "no custom logits processors"),
    "prompt_logprobs": (lambda v: v is None, "/v1/completions gives the prompt's log-probabilities with echo "
                        "and logprobs"),
    "truncate_prompt_tokens": (lambda v: v is None, "only embedding inputs are truncated; a prompt longer than the "
                               "context is a 400"),
    "skip_special_tokens": (lambda v: v is True, "special tokens are left out of the text (as with vLLM's default); "
                            "start the server with --special to write them"),
    "spaces_between_special_tokens": (lambda v: v is True, "a Hugging Face detokenizer option; llama.cpp's writes no "
                                      "extra spaces"),
    "guided_whitespace_pattern": (_unset, "no custom whitespace pattern for JSON"),
    "structural_tag": (_unset, "no structural tags; guided_grammar can express them"),
    "chat_template": (_unset, "no per-request chat template; start the server with --chat-template-file"),
    "documents": (_unset, "no documents for the chat template"),
    "mm_processor_kwargs": (_unset, "the multimodal projector sets its own options"),
    "priority": (_unset, "no priorities: requests run first come, first served"),
    "kv_transfer_params": (_unset, "no disaggregated serving"),
    "vllm_xargs": (_unset, "vLLM's extension arguments have no meaning here"),
    "return_tokens_as_token_ids": (_unset, "log-probabilities name tokens by their text and bytes"),
    "request_id": (lambda v: v is None, "ggserve names each request itself (the response's id)"),
    # /v1/completions honours it; elsewhere the prompt gets BOS once, as the vocabulary wants it
    "add_special_tokens": (lambda v: v is False, "the prompt gets the model's special tokens once, as a chat "
                           "template's prompt does"),
}
