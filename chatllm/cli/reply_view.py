"""One reply on the chat REPL's terminal (cli/repl.py): its events as they
come, and the --stats line after it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatllm.render import ReasoningDisplay
from chatllm.render_tools import ToolDisplay
from chatllm.reply.events import Draft, Event, Finish, Notice, Reasoning, Text, ToolCall, ToolResult

if TYPE_CHECKING:
    from chatllm.cli.repl import Repl


class ReplyView:
    """One reply on the terminal: its text and drafts in a sink opened at the
    first words (the spinner runs until then), its thinking on stderr, its
    notices above the spinner or, once the text has begun, after the reply;
    a tool call ends the sink so far and shows as a dim line (an approval
    question may follow it), and the reply goes on in a new one."""

    def __init__(self, repl: Repl, thinking: ReasoningDisplay) -> None:
        self.repl, self.thinking = repl, thinking
        self.sink: Any = None
        self.later: list[str] = []
        self.finish: Finish | None = None
        self.tools = ToolDisplay(repl.notice)
        self.text = ""

    def aside(self, event: Event) -> bool:
        """Handle an event that shows no words of the reply; False for one that does."""
        if isinstance(event, Text | ToolCall | ToolResult):
            return False
        if isinstance(event, Draft) and (event.text.strip() or self.sink is not None):
            return False
        if isinstance(event, Reasoning):
            self.thinking.piece(event.text)
        elif isinstance(event, Notice):
            (self.later.append if self.sink is not None else self.repl.notice)(event.text)
        elif isinstance(event, Finish):
            self.finish = event
        return True

    def show(self, event: Event) -> None:
        self.repl._stop_spinner()
        self.thinking.done()
        if isinstance(event, ToolCall | ToolResult):
            self.close()
            self.sink = None
            for note in self.later:
                self.repl.notice(note)
            self.later = []
            if isinstance(event, ToolCall):
                self.tools.call(event, self.text)
            else:
                self.tools.result(event)
            return
        if self.sink is None:
            self.sink = self.repl._open_sink()
        if isinstance(event, Text):
            self.text += event.text
            self.sink.write(event.text)
        elif isinstance(event, Draft):
            self.sink.draft(event.text)

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


def stats_line(stats) -> str:
    usage, timings = stats.usage, stats.timings
    tools = f" · {stats.tool_calls} tool call{'' if stats.tool_calls == 1 else 's'}" if stats.tool_calls else ""
    return (
        f"{usage.completion_tokens} tokens · decode {timings.decode_tokens_per_s:.1f} tok/s · "
        f"prefill {timings.prefill_tokens_per_s:.1f} tok/s · first token {timings.ttft_s:.2f} s · "
        f"prompt {usage.prompt_tokens} tokens ({usage.cached_prompt_tokens} from cache){tools} · "
        f"total {timings.total_s:.2f} s"
    )
