"""Tool-call formats by model family, and which one a chat template speaks."""

from __future__ import annotations

from frontend.structured.tool_formats.json_args.apertus import ApertusFormat
from frontend.structured.tool_formats.base import ParsedCall, ToolFormat
from frontend.structured.tool_formats.json_args.cohere import CohereFormat, CommandRPlusFormat
from frontend.structured.tool_formats.json_args.deepseek import CALLS_BEGIN, DeepSeekFormat
from frontend.structured.tool_formats.xml_args.dsml import DSML, DsmlFormat, DsmlV4Format
from frontend.structured.tool_formats.json_args.functionary import FunctionaryFormat
from frontend.structured.tool_formats.own_syntax.gemma4 import Gemma4Format
from frontend.structured.tool_formats.json_args.gigachat import V3_OPENER, GigaChatFormat
from frontend.structured.tool_formats.xml_args.glm import GlmFormat, Hy3Format, is_hy3
from frontend.structured.tool_formats.json_args.harmony import HarmonyFormat
from frontend.structured.tool_formats.json_args.hermes import HermesFormat
from frontend.structured.tool_formats.json_args.json_list import AprielFormat, FireFunctionFormat, GraniteFormat
from frontend.structured.tool_formats.json_args.kimi import SECTION_BEGIN, KimiFormat
from frontend.structured.tool_formats.xml_args.kimi_k3 import KimiK3Format, is_kimi_k3
from frontend.structured.tool_formats.own_syntax.lfm2 import Lfm2Format
from frontend.structured.tool_formats.json_args.llama3 import Llama3Format
from frontend.structured.tool_formats.xml_args.minimax import MiniMaxM1Format, MiniMaxM2Format
from frontend.structured.tool_formats.xml_args.minicpm5 import MiniCpm5Format
from frontend.structured.tool_formats.xml_args.minimax_m3 import NS as MINIMAX_NS, MiniMaxM3Format
from frontend.structured.tool_formats.json_args.mistral import MistralFormat
from frontend.structured.tool_formats.xml_args.muse_glimmer import MuseGlimmerFormat
from frontend.structured.tool_formats.xml_args.qwen_xml import QwenXmlFormat, SeedXmlFormat
from frontend.structured.tool_formats.json_args.solar_open import CALL_BEGIN as SOLAR_CALL, SolarOpenFormat

__all__ = ["ParsedCall", "ToolFormat", "GENERIC", "detect_native_format"]

# Models whose template has no tool support get tool descriptions in a system message and write
# calls as Hermes does; a grammar makes every call valid.
GENERIC = HermesFormat()


def detect_native_format(template: str) -> ToolFormat | None:
    """The tool-call format a template renders, or None when it has no (known) tool support
    (``learned.template_format`` then tries to learn it)."""
    if "tools" not in template and "tool_calls" not in template:
        return None
    if "<|channel|>" in template:  # gpt-oss: checked first, its template mentions other syntaxes
        return HarmonyFormat()
    if MINIMAX_NS in template and "<tool_call>" in template and "<invoke name=" in template:  # MiniMax M3
        return MiniMaxM3Format()
    if "<minimax:tool_call>" in template and '<invoke name="' in template:
        return MiniMaxM2Format()
    if "<tool_calls>" in template and "<beginning_of_sentence>" in template:  # MiniMax M1
        return MiniMaxM1Format()
    if DSML in template and "invoke name=" in template:  # DeepSeek V3.2 names its section function_calls
        return DsmlFormat() if "function_calls" in template else DsmlV4Format()
    if "<|START_ACTION|>" in template and "<|END_ACTION|>" in template:
        return CohereFormat()
    if "<|tool_call_start|>" in template or "<|tool_list_start|>" in template or (
            "List of tools: [" in template and "<|im_start|>" in template):  # LFM2, LFM2.5
        return Lfm2Format()
    if "<|tools_prefix|>" in template and "<|tools_suffix|>" in template:
        return ApertusFormat()
    if ">>>all" in template and ">>>${recipient}" in template:  # Functionary v3.2
        return FunctionaryFormat()
    if "<|tool_call>" in template:  # Gemma 4; before the "<tool_call>" tests, should a template name both
        return Gemma4Format()
    if '<function name="' in template and '<param name="' in template:  # MiniCPM5
        return MiniCpm5Format()
    if "<seed:tool_call>" in template:
        return SeedXmlFormat()
    if "<tool_calls>[" in template:  # Apriel; before the "<tool_call>" tests: its instructions name that tag too
        return AprielFormat()
    if "<tool_call>" in template and "<function=" in template and "<parameter=" in template:
        return QwenXmlFormat()
    if is_hy3(template):  # Tencent Hy3 (GLM's calls with its own tags)
        return Hy3Format()
    if "<tool_call>" in template and "<arg_key>" in template:
        return GlmFormat()
    if "<tool_call>" in template:
        return HermesFormat()
    if SECTION_BEGIN in template:
        return KimiFormat()
    if is_kimi_k3(template):
        return KimiK3Format()
    if "[TOOL_CALLS]" in template:
        return MistralFormat(args_marker="[ARGS]" in template, call_ids="[CALL_ID]" in template)
    if CALLS_BEGIN in template or "tool▁calls▁begin" in template:
        return DeepSeekFormat(fenced="```json" in template)
    if "<|python_tag|>" in template or ("<|start_header_id|>" in template and '"parameters"' in template):
        return Llama3Format()
    if "<|tool_call|>" in template:  # Granite 3.3 (its system prompt names the opener)
        return GraniteFormat()
    if "Action:" in template and "```json" in template and '"tool_name"' in template:  # Command R+
        return CommandRPlusFormat()
    if "<|function_call|>" in template and "<|role_sep|>" in template:  # GigaChat 3.1
        return GigaChatFormat()
    if "<|role_sep|>" in template and "<|message_sep|>" in template:  # GigaChat 3: a "function call" message
        return GigaChatFormat(V3_OPENER)
    if "functools[" in template:  # FireFunction v2
        return FireFunctionFormat()
    if SOLAR_CALL in template:  # Solar Open
        return SolarOpenFormat()
    if "<atem:function_calls>" in template and "<|eom|>" in template:  # Muse Glimmer
        return MuseGlimmerFormat()
    return None
