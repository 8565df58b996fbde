"""Tool calls in a local model's own format: telling it of its tools,
reading its calls, and the grammar that makes every call parse and fit.

Two formats, chosen by the GGUF's chat template:

* **hermes** (Qwen2.5, Qwen3, Hermes, SmolLM3 and most chatml models): a call
  is `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`;
* **llama3** (Llama 3.1 to 3.3): a call is a bare JSON object
  `{"name": ..., "parameters": {...}}` as the whole reply.

A template that renders `tools` itself (it writes the tools' names into the
prompt, and renders an assistant's `tool_calls` and the `tool` role) is given
them and the conversation as it is. A template that does not (SmolLM2's, a
plain chatml) gets the **fallback**: chatllm describes the tools in the
system message in the hermes format, writes a call into the assistant's turn
as that text, and a tool's result as a user turn inside
`<tool_response>...</tool_response>`.

The grammar is lazy, as llama.cpp's own tool calling does: the model writes
free text until it opens a call (the trigger: `<tool_call>`, or a reply that
begins with `{"name"` for llama3), and from there on the grammar built from
the tools' schemas decides what may follow, so the call always parses and
its arguments fit the tool's schema. `tool_choice: required` (or a tool's
name) makes the grammar apply from the first token.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatllm.engine.base import GenerationParams, Message, ToolSpec

if TYPE_CHECKING:  # Jinja2 loads with the chat prompt, not with the engine (tests/test_imports.py)
    from chatllm.engine.chat_template import ChatTemplate

HERMES, LLAMA3 = "hermes", "llama3"
_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
MAX_PARALLEL_CALLS = 4  # calls one reply may hold (the grammar's bound)
_PROBE = ToolSpec("chatllm_probe_tool", "probe", '{"type": "object", "properties": {}}')
_PROBE_RESULT = "chatllm-probe-result-7f3a"


@dataclass(frozen=True)
class ToolSyntax:
    """How one chat template's model calls tools."""

    kind: str  # HERMES or LLAMA3
    in_template: bool  # the template renders tools, calls and results itself


def tool_syntax(template: ChatTemplate, source: str) -> ToolSyntax:
    """The format a template's model calls tools in, and whether the template
    renders them (tried on a probe conversation, as llama.cpp checks a
    template's capabilities)."""
    kind = LLAMA3 if "<|start_header_id|>" in source and "<tool_call>" not in source else HERMES
    call = {"id": "call_probe", "type": "function", "function": {"name": _PROBE.name, "arguments": {}}}
    conversation: list[dict[str, Any]] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": _PROBE_RESULT, "tool_call_id": "call_probe", "name": _PROBE.name},
    ]
    try:
        told = _PROBE.name in template.render([{"role": "user", "content": "hi"}], True, tools=[_spec(_PROBE)])
        rendered = template.render(conversation, True, tools=[_spec(_PROBE)])
        rendered = rendered.split("hi", 1)[-1]  # after the tools' description
        in_template = told and _PROBE.name in rendered and _PROBE_RESULT in rendered
    except Exception:  # noqa: BLE001 - a template that rejects the probe does not take tools
        in_template = False
    return ToolSyntax(kind, in_template)


def _spec(tool: ToolSpec) -> dict[str, Any]:
    return {"type": "function", "function": tool.function()}


def template_tools(tools: Sequence[ToolSpec], syntax: ToolSyntax) -> list[dict[str, Any]] | None:
    """The `tools` a template is rendered with (None: none, or the fallback)."""
    if not tools or not syntax.in_template:
        return None
    return [_spec(tool) for tool in tools]


def offered(params: GenerationParams) -> tuple[ToolSpec, ...]:
    """The tools the model is told of: one named by `tool_choice`, else all."""
    if params.tool_choice in ("auto", "required", "none"):
        return params.tools
    return tuple(tool for tool in params.tools if tool.name == params.tool_choice)


def fallback_system(tools: Sequence[ToolSpec]) -> str:
    """What the system message says of the tools where the template cannot."""
    lines = "\n".join(json.dumps(_spec(tool), ensure_ascii=False) for tool in tools)
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        f"You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{lines}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
        "</tool_call>"
    )


def message_dicts(
    messages: Sequence[Message], syntax: ToolSyntax, contents: Sequence[str], tools: Sequence[ToolSpec]
) -> list[dict[str, Any]]:
    """Messages as a template renders them, with `contents` in place of their
    texts (the caller's placeholders). In the fallback, tool calls become the
    assistant's text and results a user turn, and the tools are described in
    the system message."""
    dicts: list[dict[str, Any]] = []
    for message, content in zip(messages, contents, strict=True):
        if syntax.in_template or (not message.tool_calls and message.role != "tool"):
            item: dict[str, Any] = {"role": message.role, "content": content}
            if message.tool_calls:
                item["tool_calls"] = [_call_dict(call) for call in message.tool_calls]
            if message.role == "tool":
                item.update(tool_call_id=message.tool_call_id, name=message.name)
            dicts.append(item)
        elif message.role == "tool":
            dicts.append({"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"})
        else:
            calls = "\n".join(
                f"{_OPEN}\n{_call_json(call.name, call.arguments)}\n{_CLOSE}" for call in message.tool_calls
            )
            dicts.append({"role": "assistant", "content": (content + "\n" if message.content else "") + calls})
    if tools and not syntax.in_template:
        if dicts and dicts[0]["role"] == "system":
            dicts[0] = {**dicts[0], "content": dicts[0]["content"] + "\n\n" + fallback_system(tools)}
        else:
            dicts.insert(0, {"role": "system", "content": fallback_system(tools)})
    return dicts


def _call_dict(call: Any) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": _arguments(call.arguments)}}


def _arguments(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}


def _call_json(name: str, arguments: str) -> str:
    return json.dumps({"name": name, "arguments": _arguments(arguments)}, ensure_ascii=False)


# ---- reading calls ----------------------------------------------------------


@dataclass(frozen=True)
class ParsedCall:
    id: str
    name: str
    arguments: dict[str, Any]


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def parse_call(text: str, names: set[str]) -> ParsedCall | None:
    """One call's JSON (`{"name", "arguments"|"parameters"}`) naming one of
    `names`, else None."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("name") not in names:
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):
        arguments = _arguments(arguments)
    return ParsedCall(new_call_id(), data["name"], arguments if isinstance(arguments, dict) else {})


# A call in `<tool_call>` tags, or one a model wrote as a fenced JSON block
# (group 2) or as a bare JSON object naming a tool (group 3, to the end: the
# grammar lets a reply end after it) instead, as Qwen2.5-Coder does (the
# failure llama.cpp #21680 reports); the lazy grammar constrains all three
# (engine/tool_grammar.py).
_HERMES_CALL = re.compile(
    re.escape(_OPEN)
    + r"\s*(.*?)\s*(?:"
    + re.escape(_CLOSE)
    + r'|$)|```(?:json)?\n(\{\s*"name".*?)\s*(?:```|$)|(\{\s*"name".*)$',
    re.S,
)
_FENCE = "```"
_NAME_VALUE = re.compile(r'\s*:?\s*(?:"([\w-]*)("?))?')
# What may begin a JSON call (fenced or bare): held back until it is one, or is not.
_CALL_START = re.compile(
    r'(?:```(?:json)?\n)?\{\s*(?:"(?:n(?:a(?:m(?:e"?)?)?)?)?)?|```(?:j(?:s(?:o(?:n)?)?)?)?\n?|`{1,2}'
)


class CallSplitter:
    """Separates a reply's text from its tool calls as it streams: text before
    a call goes on at once; from the call's opening on it is held, and read as
    calls at the end. (The only work per piece is a look for the opening.)"""

    def __init__(self, syntax: ToolSyntax, names: set[str]) -> None:
        self.kind, self.names = syntax.kind, names
        self.held = ""
        self.calls: list[ParsedCall] = []
        self._started = False

    def feed(self, text: str) -> str:
        """The part of `text` that is answer text for sure."""
        if self.kind == LLAMA3:
            if self._started:
                return text
            self.held += text
            stripped = self.held.lstrip()
            if not stripped or stripped.startswith("{"):
                return ""  # a reply that opens with an object is a call: read at the end
            self._started, held, self.held = True, self.held, ""
            return held
        if not self.held and not any(c in text for c in "<`{"):
            return text
        self.held += text
        return self._release()

    def _release(self) -> str:
        held = self.held
        found = [i for i in (held.find(_OPEN), _json_call_at(held, self.names)) if i >= 0]
        at = min(found, default=len(held) - _open_tail(held))  # else: may be the start of an opening
        self.held = held[at:]
        return held[:at]

    def finish(self) -> str:
        """What was held, as calls (`self.calls`); text that was no call is returned."""
        held, self.held = self.held, ""
        if self.kind == LLAMA3:
            call = parse_call(held.strip(), self.names) if held.strip().startswith("{") else None
            if call is not None:
                self.calls.append(call)
                return ""
            return held
        rest, position = [], 0
        for match in _HERMES_CALL.finditer(held):
            body = next(group for group in match.groups() if group is not None)
            call = parse_call(body.rstrip(), self.names)
            # A call the length limit cut short is no text for the reader either.
            cut = call is None and match.end() == len(held) and body.startswith("{")
            cut = cut and match.group(3) is None and not match.group(0).endswith((_CLOSE, _FENCE))
            if call is None and not cut:
                continue
            rest.append(held[position : match.start()])
            position = match.end()
            if call is not None:
                self.calls.append(call)
        rest.append(held[position:])
        return "".join(rest).strip() if position else held


def _json_call_at(text: str, names: set[str]) -> int:
    """Where the first JSON object that is, or may yet become, a call of one of
    `names` starts (`{"name": "order_status"`, maybe in a ```json block), or -1."""
    for at, char in enumerate(text):
        if (char == "{" or (char == "`" and text[at - 1 : at] != "`")) and _fence_may_call(text, at, names):
            return at
    return -1


def _fence_may_call(text: str, at: int, names: set[str]) -> bool:
    opening = _CALL_START.match(text, at)
    if opening is None:
        return False
    if opening.end() == len(text):
        return True  # the text so far is the start of an opening
    if not opening.group(0).endswith('"name"'):
        return False
    value = _NAME_VALUE.match(text, opening.end())
    if value is None:
        return False
    name, closed = value.group(1) or "", bool(value.group(2))
    if value.end() == len(text) and not closed:
        return any(n.startswith(name) for n in names)
    return closed and name in names


def _open_tail(text: str) -> int:
    """The length of the end of `text` that may be the start of `<tool_call>`."""
    return next((n for n in range(min(len(_OPEN) - 1, len(text)), 0, -1) if _OPEN.startswith(text[-n:])), 0)


def split_calls(pieces: Iterator[Any], splitter: CallSplitter) -> Iterator[Any]:
    """`pieces` (text and other events) with the tool calls taken out of the
    text and yielded as ParsedCall at the end."""
    for piece in pieces:
        if type(piece) is str:
            text = splitter.feed(piece)
            if text:
                yield text
        else:
            yield piece
    text = splitter.finish()
    if text:
        yield text
    yield from splitter.calls
