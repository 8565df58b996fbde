"""Turning messages into prompt tokens with a GGUF's own chat template.

Message contents are rendered as random placeholders, the template's text is
tokenized with special tokens parsed, and each content is tokenized on its own
without: a user who types `<|im_start|>system` gets those characters, not a new
turn.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from chatllm.engine.base import GenerationParams, Message, MessageToolCall, ToolSpec
from chatllm.engine.bindings import llama_bindings
from chatllm.engine.chat_template import ChatTemplate
from chatllm.engine.reasoning import prompt_opens_thinking, template_has_thinking_switch
from chatllm.engine.state_cache import MIN_PREFIX_TOKENS
from chatllm.engine.tool_format import ToolSyntax, message_dicts, offered, template_tools, tool_syntax
from chatllm.errors import EngineError

llama_cpp = llama_bindings()

# Chat templates by name, for `--chat-template NAME`; chatml is also what a GGUF
# without a template of its own gets.
BUILTIN_TEMPLATES = {
    "chatml": (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
        " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
        " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
    "gemma": (
        "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
        "{% if message['role'] == 'system' %}{{ '<start_of_turn>user\n' + message['content'] + '<end_of_turn>\n' }}"
        "{% else %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
    ),
    # For a base model (no chat training): a plain transcript it can continue.
    "plain": (
        "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
        "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n' }}"
        "{% else %}{{ 'Assistant: ' + message['content'] + '\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
    ),
}
CHATML_TEMPLATE = BUILTIN_TEMPLATES["chatml"]
# Tools whose text was made plain (ChatPrompt.plain_text), kept for the next prompt.
_PLAIN_TOOLS_KEPT = 64


class ChatPrompt:
    """Tokenizer and chat template of one loaded model."""

    def __init__(
        self,
        model: Any,
        vocab: Any,
        model_name: str,
        template: str | None = None,
    ) -> None:
        """`template` replaces the GGUF's own chat template (Jinja text)."""
        self._model = model
        self._vocab = vocab
        self.model_name = model_name
        raw = llama_cpp.llama_model_chat_template(self._model, None)
        # False for a GGUF without a template of its own (usually a base model).
        self.has_own_template = bool(raw)
        if template is None:
            template = raw.decode("utf-8", errors="replace") if raw else CHATML_TEMPLATE
        # Reasoning: whether the template can think at all, and can switch it.
        self.thinking_switch = template_has_thinking_switch(template)
        self.may_think = self.thinking_switch or "<think>" in template
        self.opens_thinking = False  # the last prompt ended inside an opened <think>
        self._bos = llama_cpp.llama_vocab_bos(self._vocab)
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab)) and self._bos >= 0
        eos = self._token_text(llama_cpp.llama_vocab_eos(self._vocab))
        self._template = ChatTemplate(template, bos_token=self._token_text(self._bos), eos_token=eos)
        self._template_source = template
        self._tool_syntax: ToolSyntax | None = None
        self._plain_tools: dict[ToolSpec, ToolSpec] = {}
        # Contents are rendered as these placeholders, then replaced by their own
        # tokens; a random part keeps user text from ever matching one.
        nonce = secrets.token_hex(6)
        self._placeholder = "\ue000" + nonce + "{}\ue001"
        self._placeholder_split = re.compile("\ue000" + nonce + r"(\d+)\ue001")
        self._rendered: tuple[tuple[Any, ...], list[int], bool] | None = None

    @property
    def tool_syntax(self) -> ToolSyntax:
        """How this template's model calls tools (tried once, on first use)."""
        if self._tool_syntax is None:
            self._tool_syntax = tool_syntax(self._template, self._template_source)
        return self._tool_syntax

    def _token_text(self, token: int) -> str:
        text = llama_cpp.llama_vocab_get_text(self._vocab, token) if token >= 0 else None
        return (text or b"").decode("utf-8", errors="replace")

    def tokenize(self, text: str, special: bool) -> list[int]:
        data = text.encode("utf-8")
        if not data:
            return []
        capacity = len(data) + 8  # a token is at least one byte
        tokens = (llama_cpp.llama_token * capacity)()
        count = llama_cpp.llama_tokenize(self._vocab, data, len(data), tokens, capacity, False, special)
        if count < 0:
            raise EngineError(f"cannot tokenize a text of {len(data)} bytes")
        return tokens[:count]

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as plain text: no BOS, special-token markup not parsed."""
        return len(self.tokenize(text, special=False))

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        """Exactly the number of tokens `stream(messages, ...)` evaluates as its prompt."""
        return len(self.prompt_tokens(messages))

    def prompt_tokens(
        self, messages: Sequence[Message], think: bool | None = None, params: GenerationParams | None = None
    ) -> list[int]:
        """The templated prompt, ending with the opening of the assistant's turn.
        Template text is tokenized with special tokens parsed; message contents
        never are. `think` is passed to templates with a thinking switch
        (`enable_thinking`); None leaves the template's default. `params`'
        tools are described to the model (engine/tool_format.py)."""
        tools = params if params is not None and params.tools and params.tool_choice != "none" else None
        key = (tuple(messages), think, offered(tools) if tools else ())
        if self._rendered is not None and self._rendered[0] == key:
            self.opens_thinking = self._rendered[2]
            return list(self._rendered[1])
        tokens = self._render(key[0], add_generation_prompt=True, think=think, tools=tools)
        self._rendered = (key, tokens, self.opens_thinking)
        return list(tokens)

    def _render(
        self,
        messages: Sequence[Message],
        add_generation_prompt: bool,
        think: bool | None = None,
        tools: GenerationParams | None = None,
    ) -> list[int]:
        render = self._template.render
        extra: dict[str, Any] = {"enable_thinking": think} if think is not None and self.thinking_switch else {}
        as_dicts: Callable[[Sequence[Message], Sequence[str]], list[dict[str, Any]]] = self._dicts
        if tools is not None or any(m.tool_calls or m.role == "tool" for m in messages):
            syntax = self.tool_syntax
            # Tools and calls are written as the template's own text: no special token may hide in them.
            listed = tuple(self._plain_tool(tool) for tool in offered(tools)) if tools is not None else ()
            messages = [self._plain_calls(m) if m.tool_calls else m for m in messages]
            extra["tools"] = template_tools(listed, syntax)
            as_dicts = lambda ms, contents: message_dicts(ms, syntax, contents, listed)  # noqa: E731
        try:
            placeholders = [self._placeholder.format(i) if m.content else "" for i, m in enumerate(messages)]
            scaffold = render(as_dicts(messages, placeholders), add_generation_prompt, **extra)
            real = render(as_dicts(messages, [m.content for m in messages]), add_generation_prompt, **extra)
        except Exception as error:  # a template may reject a conversation (e.g. roles must alternate)
            raise EngineError(f"the chat template of '{self.model_name}' rejected these messages: {error}") from None
        if add_generation_prompt:
            self.opens_thinking = self.may_think and prompt_opens_thinking(real)
        parts = self._placeholder_split.split(scaffold)
        contents = [m.content for m in messages]
        # Templates that transform contents (usually `| trim`) still get the
        # transformed text; any other transformation falls back to the raw content.
        if _assemble(parts, contents) != real:
            stripped = [c.strip() for c in contents]
            if _assemble(parts, stripped) == real:
                contents = stripped
        tokens: list[int] = []
        for index, part in enumerate(parts):
            if index % 2 == 0:
                tokens += self.tokenize(part, special=True)
            else:
                tokens += self.tokenize(contents[int(part)], special=False)
        if self._add_bos and (not tokens or tokens[0] != self._bos):
            tokens.insert(0, self._bos)
        return tokens

    def plain_text(self, text: str) -> str:
        """`text` with the text of every special token in it broken by a zero-width
        space: a tool's description (an MCP server's, a client's) or a call's
        arguments, which a template writes as its own text (tokenized with special
        tokens parsed), can then never end a turn or open one."""
        parsed = self.tokenize(text, True)
        if parsed == self.tokenize(text, False):
            return text
        special = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
        for token in set(parsed):
            piece = self._token_text(token)
            if len(piece) > 1 and piece in text and llama_cpp.llama_vocab_get_attr(self._vocab, token) & special:
                text = text.replace(piece, piece[0] + "\u200b" + piece[1:])
        return text

    def _plain_tool(self, tool: ToolSpec) -> ToolSpec:
        found = self._plain_tools.get(tool)
        if found is None:
            if len(self._plain_tools) >= _PLAIN_TOOLS_KEPT:  # a server's clients may send any tools
                self._plain_tools.clear()
            plain = self.plain_text
            found = self._plain_tools[tool] = ToolSpec(
                plain(tool.name), plain(tool.description), plain(tool.parameters)
            )
        return found

    def _plain_calls(self, message: Message) -> Message:
        plain = self.plain_text
        return replace(
            message,
            tool_calls=tuple(MessageToolCall(c.id, plain(c.name), plain(c.arguments)) for c in message.tool_calls),
        )

    @staticmethod
    def _dicts(messages: Sequence[Message], contents: Sequence[str]) -> list[dict[str, Any]]:
        return [{"role": m.role, "content": content} for m, content in zip(messages, contents, strict=True)]

    def system_prefix_length(
        self, messages: Sequence[Message], prompt: list[int], params: GenerationParams | None = None
    ) -> int:
        """Tokens of the leading system messages when they form an exact prefix of
        `prompt` long enough to be worth a file on disk; otherwise 0. `params`'
        tools are rendered as in the prompt (a template writes them into the
        system turn, so a persona with tools has its own prefix)."""
        count = 0
        while count < len(messages) and messages[count].role == "system":
            count += 1
        tools = params if params is not None and params.tools and params.tool_choice != "none" else None
        try:
            prefix = self._render(messages[:count], add_generation_prompt=False, tools=tools) if count else []
        except EngineError:
            return 0
        fits = MIN_PREFIX_TOKENS <= len(prefix) < len(prompt) and prompt[: len(prefix)] == prefix
        return len(prefix) if fits else 0


def _assemble(parts: list[str], contents: list[str]) -> str:
    return "".join(part if index % 2 == 0 else contents[int(part)] for index, part in enumerate(parts))
