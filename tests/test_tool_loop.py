"""A reply that calls tools, through the reply pipeline on the fake engine:
call -> result -> the model goes on; the limit; tool_choice for a reply's
first call; approval; a persona that may look orders up; the calls kept in
history and replayed by --continue. (The CLI, a real MCP server and `serve`
on the embedded model: test_tools_cli.py, test_serve_tools.py.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from chatllm.engine.base import GenerationParams, Message
from chatllm.engine.fake import FakeEngine
from chatllm.history.recording import ConversationRecorder
from chatllm.history.store import HistoryStore
from chatllm.jobs.chat import ChatSession, Persona
from chatllm.jobs.persona import build_persona, choose_knowledge
from chatllm.jobs.tooling import offering
from chatllm.reply.events import Finish, Notice, Text, ToolCall, ToolResult
from chatllm.reply.tool_loop import TOOL_RULE
from chatllm.templates import load_template
from chatllm.tools.declarations import Tool
from chatllm.tools.toolbox import Approval, Toolbox
from tests.support.events import reply_and_notes

ECHO = str(Path(__file__).parent / "support" / "tools" / "echo_tool.py")
SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


def call_markup(name: str, **arguments: object) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


class Recording(FakeEngine):
    """The fake engine, keeping the settings of every call."""

    def __init__(self, reply) -> None:
        super().__init__(reply=reply)
        self.params: list[GenerationParams] = []

    def stream(self, messages, params):
        self.params.append(params)
        return super().stream(messages, params)


def echo_box(approval: Approval | None = None, limit: int = 8, **tool) -> Toolbox:
    echo = Tool("echo", "Echoes its text", SCHEMA, command=(sys.executable, ECHO), **tool)
    return Toolbox([echo], approval or Approval(yes=True), limit=limit)


def session(reply, box: Toolbox, choice: str = "auto", **options) -> tuple[ChatSession, Recording]:
    engine = Recording(reply)
    params = offering(GenerationParams(temperature=0), box, choice)
    return ChatSession(engine, Persona("chat", "Be brief."), params, tools=box, **options), engine


def calls_once(messages: list[Message]) -> str:
    """Calls echo until a result is in, then says what it returned."""
    if messages[-1].role == "tool":
        return "It said " + json.loads(messages[-1].content)["stdin"]["text"]
    return "Let me ask. " + call_markup("echo", text="; rm -rf ~ $(id) `id`")


def test_a_call_runs_and_the_model_goes_on_with_its_result() -> None:
    chat, engine = session(calls_once, echo_box())
    events = list(chat.send("Echo something"))
    kinds = [type(e).__name__ for e in events if not isinstance(e, Text)]
    assert kinds == ["ToolCall", "ToolResult", "Finish"]
    call, result = (e for e in events if isinstance(e, ToolCall | ToolResult))
    assert call.arguments == {"text": "; rm -rf ~ $(id) `id`"} and not result.is_error
    text, _ = reply_and_notes(events)
    assert text == "Let me ask.\n\nIt said ; rm -rf ~ $(id) `id`"  # the shell characters reached it as text
    second = engine.calls[1]
    assert TOOL_RULE in second[0].content
    assert second[-2].role == "assistant" and second[-2].tool_calls[0].name == "echo"
    assert second[-1].role == "tool" and second[-1].tool_call_id == call.id
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.reason == "stop" and finish.stats.tool_calls == 1


def test_the_limit_stops_the_calls_and_the_model_answers_without_tools() -> None:
    def always_calls(messages: list[Message]) -> str:
        return call_markup("echo", text="again")

    chat, engine = session(always_calls, echo_box(limit=2))
    events = list(chat.send("Loop"))
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [r.is_error for r in results] == [False, False]
    assert [p.tool_choice for p in engine.params] == ["auto", "auto", "none"]  # the third call may not call


def test_a_named_tool_choice_is_the_first_call_of_each_reply() -> None:
    chat, engine = session(calls_once, echo_box(), choice="echo")
    list(chat.send("Anything"))
    list(chat.send("Again"))
    assert [p.tool_choice for p in engine.params] == ["echo", "auto", "echo", "auto"]


def test_in_a_pipe_a_call_that_needs_approval_is_refused_and_the_reply_goes_on() -> None:
    def told(messages: list[Message]) -> str:
        if messages[-1].role == "tool":
            return "I was not allowed: " + messages[-1].content
        return call_markup("echo", text="hi")

    chat, _ = session(told, echo_box(Approval()))
    text, notes = reply_and_notes(chat.send("Echo hi"))
    assert "the user did not allow this call of 'echo'" in text
    assert "Pass --yes (-y)" in notes
    chat, _ = session(told, echo_box(Approval(), safe=True))  # a tool declared safe runs
    assert reply_and_notes(chat.send("Echo hi"))[0].endswith('"stdin": {"text": "hi"}}')


def test_a_model_cannot_run_an_undeclared_tool() -> None:
    def names_bash(messages: list[Message]) -> str:
        if messages[-1].role == "tool":
            return "Done."
        return call_markup("bash", command="touch /tmp/owned")

    chat, _ = session(names_bash, echo_box())
    results = [e for e in chat.send("Run it") if isinstance(e, ToolResult)]
    # The engine reads only calls of the tools it was offered; the toolbox would refuse one anyway.
    assert results == [] and chat.turns[0].reply == "Done." or "no tool 'bash'" in results[0].content


# ---- a persona that may look orders up ------------------------------------------------

FAQ = "## Orders\nOrder numbers look like NB-12345. See My orders for where your order is.\n"
ORDER_RESULT = '{"order_id": "NB-51377", "status": "Shipped", "expected_delivery": "2026-03-06"}'


def support(tmp_path: Path, reply, result: str = ORDER_RESULT, fails: bool = False) -> tuple[ChatSession, Recording]:
    faq = tmp_path / "faq.md"
    faq.write_text(FAQ)
    tool = tmp_path / "orders.py"
    tool.write_text(f"import sys\nsys.stdout.write({result!r})\nsys.exit({int(fails)})\n")
    box = Toolbox([Tool("order_status", "An order's status", SCHEMA, command=(sys.executable, str(tool)), safe=True)])
    template = load_template("support")
    engine = Recording(reply)
    persona = build_persona(template, template.resolve_variables({}), engine, choose_knowledge(template, [faq]))
    return ChatSession(engine, persona, offering(GenerationParams(temperature=0), box, "auto"), tools=box), engine


def looks_up(messages: list[Message]) -> str:
    if messages[-1].role == "tool":
        return "Your order NB-51377 has been shipped and arrives on 2026-03-06."
    return call_markup("order_status", text="NB-51377")


def test_with_an_order_tool_the_persona_answers_with_the_status_it_returned(tmp_path: Path) -> None:
    chat, engine = support(tmp_path, looks_up)
    text, _ = reply_and_notes(chat.send("Where is my order NB-51377?"))
    assert text == "Your order NB-51377 has been shipped and arrives on 2026-03-06."  # its date: a fact the tool gave
    assert len(engine.calls) == 2
    # An order named and a tool to look it up: the reply starts with a call, not a guess.
    assert [p.tool_choice for p in engine.params] == ["required", "auto"]


def test_without_an_order_number_the_model_may_ask_for_it(tmp_path: Path) -> None:
    chat, engine = support(tmp_path, lambda messages: "Could you tell me your order number?")
    assert reply_and_notes(chat.send("Where is my order?"))[0] == "Could you tell me your order number?"
    assert [p.tool_choice for p in engine.params] == ["auto"]  # a forced call would have to make a number up


def test_with_a_lookup_tool_the_support_prompt_asks_for_a_call_and_drops_the_cannot_see_example() -> None:
    template = load_template("support")
    values = template.resolve_variables({})
    without = build_persona(template, values, None).system
    with_tool = build_persona(template, values, None, tool_names=["order_status"]).system
    assert "I can't see orders from here" in without and "call the order tool" not in without
    assert "I can't see orders from here" not in with_tool and "call the order tool" in with_tool


def test_without_a_lookup_the_persona_still_never_states_a_status(tmp_path: Path) -> None:
    chat, _ = support(tmp_path, lambda messages: "Your order NB-51377 has been shipped.")
    text, _ = reply_and_notes(chat.send("Where is my order NB-51377?"))
    assert "shipped" not in text and "human colleague" in text
    chat, engine = support(tmp_path, looks_up, result="the order database is down", fails=True)
    text, _ = reply_and_notes(chat.send("Where is my order NB-51377?"))
    assert "shipped" not in text and "human colleague" in text
    assert engine.calls[1][-1].content.startswith("[error] tool 'order_status' exited with status 1")


# ---- history and --continue -----------------------------------------------------------


def test_history_keeps_the_calls_and_a_continued_chat_replays_them(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "history.db")
    recorder = ConversationRecorder(model="fake.gguf", template="chat", store=store)
    chat, _ = session(calls_once, echo_box(), on_turn=recorder)
    list(chat.send("Echo something"))
    before = chat.messages()
    saved = store.get(recorder.conversation_id or 0)
    assert saved.messages[1].tools[0]["calls"][0]["name"] == "echo"
    again, _ = session(calls_once, echo_box())
    again.restore(saved.turns())
    assert again.messages() == before
    roles = [m.role for m in before]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert json.loads(before[3].content)["stdin"] == {"text": "; rm -rf ~ $(id) `id`"}


def test_a_reply_that_calls_tools_notes_nothing_it_should_not(tmp_path: Path) -> None:
    chat, _ = session(calls_once, echo_box())
    notes = [e for e in chat.send("Echo") if isinstance(e, Notice)]
    assert notes == []
