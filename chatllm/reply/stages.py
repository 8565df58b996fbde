"""The stages a reply's text goes through, each fed the text as it streams.

A stage is fed every piece of text the stages before it let through; `feed`
returns what may go on now ("" while it holds text back), `pending` is what it
holds (a terminal shows it as a draft), and `finish` returns the rest once the
reply has ended, knowing how it ended (`Ending`). A stage never sees a
reasoning model's thinking. The rules themselves live beside what they judge
(jobs/repetition.py, grounding.py, knowledge_use.py, orders.py, handover.py,
persona_reply.py); the pipeline (pipeline.py) decides which stages a reply
gets and in what order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from chatllm.engine.base import Stream
from chatllm.jobs.grounding import SENTENCE_END, GroundingFilter
from chatllm.jobs.handover import declines_without_offer
from chatllm.jobs.knowledge_use import KnowledgeUse
from chatllm.jobs.orders import states_order_status
from chatllm.jobs.persona_reply import scrub
from chatllm.jobs.repetition import RepetitionGuard

_WORD_END = re.compile(r"\w+$")


@dataclass(frozen=True)
class Ending:
    """How a reply ended, for the stages' last word."""

    by_itself: bool = True  # the model ended it (not a length limit, not a stopped repeat)
    stopped_a_repeat: bool = False  # the repetition guard cut it
    # It ended calling tools: the reply goes on once their results are in, so
    # what it said so far is no whole answer to judge.
    called_tools: bool = False


class Stage:
    """A stage that lets everything through as it comes; stages override what
    they do differently."""

    # The reply is held whole until judged: a draft would show its later words
    # before its first, so a reply with such a stage gets no drafts.
    holds_reply = False

    def feed(self, text: str) -> str:
        return text

    def finish(self, ending: Ending) -> str:
        return ""

    @property
    def pending(self) -> str:
        return ""

    @property
    def stops(self) -> bool:
        """The reply must end now (the model is stopped)."""
        return False


class Repetition(Stage):
    """Stops a reply that repeats itself; the repeat is never shown
    (jobs/repetition.py). One guard may serve several calls of one reply."""

    def __init__(self, guard: RepetitionGuard) -> None:
        self.guard = guard
        self.feed = guard.feed  # type: ignore[method-assign, assignment]  # the guard's own: one call less per piece

    def finish(self, ending: Ending) -> str:
        return "" if self.guard.tripped is not None else self.guard.finish()

    def interrupted(self) -> str:
        """What it held, unchecked: reply text the user would have seen next."""
        return self.guard.flush()

    @property
    def pending(self) -> str:
        return self.guard.pending

    @property
    def stops(self) -> bool:
        return self.guard.tripped is not None


class Grounding(Stage):
    """Leaves out sentences stating numbers the source does not have, and says
    `fallback` instead when that leaves nothing (jobs/grounding.py). A reply
    that was cut ends at its last whole sentence; an unfinished sentence that
    is all there is stays, unless `drop_lone_fragment` (a caller that will ask
    again) or `drop_fragment_of_repeat` and the guard cut it."""

    def __init__(
        self,
        check: GroundingFilter,
        fallback: str = "",
        drop_lone_fragment: bool = False,
        drop_fragment_of_repeat: bool = False,
    ) -> None:
        self.check = check
        self.fallback = fallback
        self.drop_lone_fragment = drop_lone_fragment
        self.drop_fragment_of_repeat = drop_fragment_of_repeat
        self._said = False

    def feed(self, text: str) -> str:
        shown = self.check.feed(text)
        if shown and not self._said:
            self._said = not shown.isspace()
        return shown

    def finish(self, ending: Ending) -> str:
        drop_lone = self.drop_lone_fragment or self.drop_fragment_of_repeat and ending.stopped_a_repeat
        if (self._said or drop_lone) and not ending.by_itself:
            self.check.discard_unfinished()
        rest = self.check.finish()
        self._said = self._said or bool(rest.strip())
        if not self._said and self.check.dropped and self.fallback and not ending.called_tools:
            rest += self.fallback
        return rest

    @property
    def pending(self) -> str:
        return self.check.pending


class KnowledgeDrawn(Stage):
    """A persona's answer to a question is held until it draws on the
    knowledge, and replaced by `fallback` when it never does
    (jobs/knowledge_use.py)."""

    holds_reply = True

    def __init__(self, use: KnowledgeUse, fallback: str) -> None:
        self.use = use
        self.fallback = fallback
        self._held: list[str] = []
        self._settled = False

    def feed(self, text: str) -> str:
        if self._settled:
            return text
        self._held.append(text)
        if text.isalnum():  # still inside a word: "4" is not yet "45"
            return ""
        held = "".join(self._held)
        self._settled = self.use.settled(_WORD_END.sub("", held))
        return held if self._settled else ""

    def finish(self, ending: Ending) -> str:
        if self._settled:
            return ""
        text = "".join(self._held)
        if (
            not text.strip()
            or ending.called_tools
            or self.use.settled(text)
            or not self.use.judgeable(text)
            or not self.fallback
        ):
            return text
        self.use.replaced = True
        return self.fallback

    @property
    def pending(self) -> str:
        return "" if self._settled else "".join(self._held)


class Sentences(Stage):
    """Judges a reply sentence by sentence (`sentence` returns what to show)."""

    def __init__(self) -> None:
        self._held = ""

    def sentence(self, sentence: str, last: bool) -> str:
        raise NotImplementedError

    def feed(self, text: str) -> str:
        self._held += text
        shown = []
        while (end := SENTENCE_END.search(self._held)) is not None:
            sentence, self._held = self._held[: end.end()], self._held[end.end() :]
            shown.append(self.sentence(sentence, last=False))
        return "".join(shown)

    def finish(self, ending: Ending) -> str:
        held, self._held = self._held, ""
        return self.sentence(held, last=True) if held else ""

    @property
    def pending(self) -> str:
        return self._held


class NoOrderStatus(Sentences):
    """Leaves out a sentence that states an order's status, and says `instead`
    after what is left when one was (jobs/orders.py)."""

    def __init__(self, instead: str) -> None:
        super().__init__()
        self.instead = instead
        self._dropped = False
        self._said = ""

    def sentence(self, sentence: str, last: bool) -> str:
        if states_order_status(sentence):
            self._dropped = True
            sentence = ""
        self._said += sentence
        return sentence

    def finish(self, ending: Ending) -> str:
        rest = super().finish(ending)
        if self._dropped and self.instead and not ending.called_tools:
            rest += (" " if self._said.strip() and not self._said[-1].isspace() else "") + self.instead
        return rest


class NothingInternal(Sentences):
    """Leaves out passage labels, knowledge file names and the prompt's words
    for its knowledge (persona_reply.scrub)."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = names

    def sentence(self, sentence: str, last: bool) -> str:
        return scrub(sentence, self.names)


class OffersHandover(Stage):
    """Adds `handover` to a reply that declines without offering it
    (jobs/handover.py)."""

    def __init__(self, handover: str) -> None:
        self.handover = handover
        self._said: list[str] = []

    def feed(self, text: str) -> str:
        self._said.append(text)
        return text

    def finish(self, ending: Ending) -> str:
        reply = "".join(self._said)
        if ending.called_tools:
            return ""
        if self.handover and reply.strip() and self.handover not in reply and declines_without_offer(reply):
            return ("" if reply.endswith((" ", "\n")) else " ") + self.handover
        return ""


def through(pieces: Iterable[str], *stages: Stage, ending: Ending = Ending()) -> Stream:
    """`pieces` through `stages` in order, for text that needs no engine (a
    job's own text, a test); the pipeline feeds a model's reply itself."""
    for piece in pieces:
        for stage in stages:
            piece = stage.feed(piece)
            if not piece:
                break
        else:
            yield piece
    yield from (text for text in finish_all(stages, lambda: ending) if text)


def finish_all(stages: Sequence[Stage], ending: Callable[[], Ending]) -> list[str]:
    """Each stage's last word, fed on through the stages after it. `ending` is
    asked again for each stage: an earlier stage's last word may change it (the
    guard may find a repeat in the reply's very end)."""
    out = []
    for index, stage in enumerate(stages):
        text = stage.finish(ending())
        for later in stages[index + 1 :]:
            if not text:
                break
            text = later.feed(text)
        out.append(text)
    return out
