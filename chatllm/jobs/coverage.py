"""Whether a persona's knowledge answers the customer's question, asked of the
model itself before it answers.

A 1.5B model answers what its knowledge does not cover as readily as what it
does ("Yes, we offer theft insurance for the bikes you sell."): the prompt's
rule to say "I don't have that information" is not enough. Asked plainly
whether its knowledge answers the question, the same model tells the two
apart far better than it refrains from inventing. So before a persona replies
to a question, the model is asked that, and its log-probabilities of "yes"
and "no" as the whole reply decide (scored, not sampled, as classify does);
when it says no, the persona's fallback (decline, offer the handover) is the
reply.

The judge's prompt is the reply's own prompt with one line added to the last
user message, so the KV cache holds their shared prefix (the system prompt
with the knowledge, the conversation, the question) for the reply that
follows: the check costs its own line and four one-word continuations.

Whether a model can judge at all, and where its line between yes and no
lies, is measured on the model itself, once per persona: it judges questions
about the knowledge's own sections ("What can you tell me about returns?"),
which the knowledge covers by construction, and questions no shop's
knowledge covers ("Do you sell live lobsters?"). A model whose two means are
closer than `MIN_SEPARATION` does not judge. The threshold lies
`THRESHOLD_SHARE` of the way from the uncovered probes' mean to the covered
ones': the absurd uncovered probes score far lower than a real customer's
uncovered question ("Do you offer a student discount?"), while the covered
probes score about as high as real covered questions, so halfway between
them is too lenient. Measured on Qwen2.5-Coder-1.5B (benchmarks/README.md,
"Support on the 1.5B"): its probes' means are about +2.1 and -2.2 on the support set and
+2.4 and -1.8 on the held-out set; real covered questions score +1.3 on
average, and 11 of the 14 uncovered ones below +0.4. SmolLM2-135M separates
its probes by 0.1-0.2 and is left to the surface check of
jobs/knowledge_use.py. The result is kept
in the cache folder, keyed by the model file and the system prompt.

The judge needs the knowledge in the prompt whole (jobs/persona.py): with
passages retrieved per question, the 1.5B model's margins did not separate
covered from uncovered questions at all.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chatllm.engine.base import Message, Scorer
from chatllm.private_files import write_private

JUDGE_QUESTION = "Does the KNOWLEDGE above answer this question? Reply yes or no."
_YES = ("yes", "Yes")
_NO = ("no", "No")
# Questions about a section of the knowledge: covered by construction.
COVERED_PROBE = "What can you tell me about {topic}?"
COVERED_PROBES = 4
# Questions no shop's help centre answers.
UNCOVERED_PROBES = (
    "Do you sell live lobsters?",
    "Can I book a helicopter flight to Antarctica with you?",
    "What is your recipe for apple pie?",
)
# Mean margins closer than this: the model cannot tell covered from uncovered.
MIN_SEPARATION = 1.0
# Where the threshold lies between the uncovered probes' mean (0) and the
# covered probes' (1). On the 1.5B's support set: halfway handed over 8 of 14
# uncovered questions; 0.6 hands over 12 of 14 and keeps the same right facts
# (29 of 39); 0.7 keeps 3 fewer. On the held-out set 0.6 hands over 8 of 10
# (with the order rule) and keeps 10 of 11 right facts.
THRESHOLD_SHARE = 0.6
_CALIBRATION_VERSION = 1


def judge_messages(messages: Sequence[Message], question: str = JUDGE_QUESTION) -> list[Message]:
    """`messages` with the judge's `question` added to the last user message."""
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None:
        raise ValueError("no user message to judge")
    judged = list(messages)
    judged[last] = Message("user", f"{messages[last].content.rstrip()}\n\n{question}")
    return judged


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def margin(scorer: Scorer, messages: Sequence[Message], question: str = JUDGE_QUESTION) -> float:
    """log P(yes) - log P(no) for the judge's `question` after `messages`."""
    scores = scorer.score(judge_messages(messages, question), [*_YES, *_NO])
    return _logsumexp(scores[: len(_YES)]) - _logsumexp(scores[len(_YES) :])


@dataclass(frozen=True)
class Calibration:
    covered_mean: float
    uncovered_mean: float

    @property
    def usable(self) -> bool:
        return self.covered_mean - self.uncovered_mean >= MIN_SEPARATION

    @property
    def threshold(self) -> float:
        return self.uncovered_mean + THRESHOLD_SHARE * (self.covered_mean - self.uncovered_mean)


@dataclass(frozen=True)
class Coverage:
    margin: float  # log P(yes) - log P(no): the higher, the surer the model is that its knowledge answers it
    threshold: float

    @property
    def covered(self) -> bool:
        return self.margin >= self.threshold


@dataclass
class CoverageJudge:
    """One persona's judge. `topics` are the knowledge's section headings (the
    covered probes); `cache_dir` keeps the calibration between runs, under a
    key made of `model_key` (the model file's fingerprint) and the system prompt.
    A job whose prompt is not the system prompt and the question (`chatllm
    ask` gives each question its passages) says how a probe question becomes
    messages (`probe_messages`) and what the judge is asked (`question`)."""

    system: str
    topics: tuple[str, ...]
    model_key: str | None = None
    cache_dir: Path | None = None
    question: str = JUDGE_QUESTION
    probe_messages: Callable[[str], list[Message]] | None = None
    calibration: Calibration | None = field(default=None, init=False)

    def judge(self, scorer: Scorer, messages: Sequence[Message]) -> Coverage | None:
        """The model's judgement of whether the knowledge answers the last
        user message; None when this model cannot judge."""
        calibration = self.calibrate(scorer)
        if not calibration.usable:
            return None
        return Coverage(margin(scorer, messages, self.question), calibration.threshold)

    def calibrate(self, scorer: Scorer) -> Calibration:
        if self.calibration is None:
            self.calibration = self._load() or self._measure(scorer)
            self._save(self.calibration)
        return self.calibration

    def _probe(self, question: str) -> list[Message]:
        if self.probe_messages is not None:
            return self.probe_messages(question)
        return [*([Message("system", self.system)] if self.system else []), Message("user", question)]

    def _measure(self, scorer: Scorer) -> Calibration:
        step = max(1, len(self.topics) // COVERED_PROBES)
        topics = self.topics[::step][:COVERED_PROBES]
        probes = [COVERED_PROBE.format(topic=t.lower()) for t in topics]
        covered = [margin(scorer, self._probe(q), self.question) for q in probes]
        uncovered = [margin(scorer, self._probe(q), self.question) for q in UNCOVERED_PROBES]
        if not covered:  # knowledge without sections: nothing to calibrate on, no judge
            return Calibration(0.0, 0.0)
        return Calibration(sum(covered) / len(covered), sum(uncovered) / len(uncovered))

    def _path(self) -> Path | None:
        if self.cache_dir is None or self.model_key is None:
            return None
        key = f"{_CALIBRATION_VERSION}\0{self.model_key}\0{self.question}\0{self.system}\0{self.topics}"
        return self.cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()}.json"

    def _load(self) -> Calibration | None:
        path = self._path()
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path is not None else None
            return Calibration(float(data["covered_mean"]), float(data["uncovered_mean"])) if data else None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a cache: a missing or broken file is measured again

    def _save(self, calibration: Calibration) -> None:
        path = self._path()
        if path is None:
            return
        try:
            write_private(path, json.dumps(vars(calibration)))  # it is derived from the persona's knowledge
        except OSError:
            pass
