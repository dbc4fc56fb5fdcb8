"""DeepSeek V3.2 and V4: DSML, MiniMax's invoke elements (``invoke_xml``) with ``｜DSML｜`` after
each tag's ``<`` or ``</``, and a ``string`` attribute on each parameter saying whether its value
is a string (raw text) or JSON; V3.2's section is ``function_calls``, V4's ``tool_calls``::

    <｜DSML｜function_calls>
    <｜DSML｜invoke name="get_weather">
    <｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>
    <｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>
    </｜DSML｜invoke>
    </｜DSML｜function_calls>

Both think in ``<think>...</think>``.
"""

from __future__ import annotations

from frontend.structured.tool_formats.xml_args.invoke_xml import InvokeXmlFormat

DSML = "｜DSML｜"


class DsmlFormat(InvokeXmlFormat):
    name = "dsml"
    prefix = DSML
    block = "function_calls"
    string_attr = True
    tokens = (DSML,)  # a control token of its own (llama.cpp preserves it)


class DsmlV4Format(DsmlFormat):
    name = "dsml-v4"
    block = "tool_calls"
