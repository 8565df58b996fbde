"""Building a conversation's persona from a template: the system prompt, few-shot
examples, greeting, and knowledge.

Knowledge is the template's own files, or the user's (`--kb FILE` replaces the
template's; `--kb +FILE` adds to them). Knowledge that fits its share goes into
the system prompt whole, where it is a fixed prefix the engine caches on disk.
Larger knowledge is indexed, and each question carries only the passages most
relevant to it, after the fixed (cacheable) system prompt.

How much is "fits" depends on the model (`knowledge_sizes`): a tiny model
answers best from a few hundred tokens that matter, not from a manual
(measured: benchmarks/README.md, "Quality"); a larger one can read half its
context. `mode` ("whole", "search") overrides the choice.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from chatllm.engine.base import Engine
from chatllm.errors import InputError
from chatllm.inputs import read_file
from chatllm.jobs.chat import Persona, with_knowledge
from chatllm.jobs.coverage import CoverageJudge
from chatllm.jobs.knowledge import CJK, KnowledgeBase
from chatllm.jobs.orders import order_reference
from chatllm.jobs.persona_reply import PersonaTexts
from chatllm.templates import CUSTOMER_LANGUAGE_VARIABLE, ORDER_VARIABLE, TOOL_NAMES_VARIABLE, Template

NOTHING_FOUND = "(nothing in the knowledge matches this question)"


def customer_language(message: str) -> str:
    """ "zh" for a message in Chinese, "" otherwise: the one other language
    the built-in persona's fixed texts are written in."""
    if re.search(r"[\u3040-\u30ff\uac00-\ud7af]", message):  # kana, hangul: Japanese, Korean
        return ""
    return "zh" if CJK.search(message) else ""


@dataclass(frozen=True)
class KnowledgeSizes:
    whole_tokens: int  # knowledge up to this size goes into the system prompt whole
    retrieved_tokens: int  # otherwise each question carries passages up to this size


def knowledge_sizes(context_size: int, tiny_model: bool) -> KnowledgeSizes:
    if tiny_model:  # SmolLM2-135M: 1 passage beat 2, 3 or the whole file (benchmarks/README.md)
        return KnowledgeSizes(whole_tokens=300, retrieved_tokens=300)
    # A larger model reads the whole knowledge when it takes up to 60% of the
    # context: then the model can judge whether it answers a question
    # (jobs/coverage.py), a question in another language than the knowledge
    # still finds its answer (retrieval matches words), and the knowledge is
    # a fixed prefix the engine keeps on disk, so a question costs only its
    # own tokens. Measured on Qwen2.5-Coder-1.5B (benchmarks/README.md,
    # "Support"): the support set's 2,150-token file whole gave as many right
    # facts as its passages retrieved per question.
    return KnowledgeSizes(whole_tokens=context_size * 6 // 10, retrieved_tokens=min(context_size * 3 // 10, 1024))


@dataclass(frozen=True)
class KnowledgeChoice:
    """The knowledge files a persona answers from, and whether they are the
    template's own (its examples may then quote them)."""

    files: tuple[Path, ...]
    template_own: bool


def choose_knowledge(template: Template, given: Sequence[Path | str] = ()) -> KnowledgeChoice:
    """`--kb` values: FILE replaces the template's knowledge, +FILE adds to it
    (a file whose name really starts with '+' is taken as it is when it exists).
    Each file is read now, so an unusable one fails before a model loads."""
    replacing, adding = [], []
    for value in given:
        text = str(value)
        if text.startswith("+") and not Path(text).exists():
            adding.append(Path(text[1:]))
        else:
            replacing.append(Path(text))
    for path in (*replacing, *adding):
        if not read_file(path).strip():
            raise InputError(f"knowledge file '{path}' is empty")
    if replacing:
        return KnowledgeChoice((*replacing, *adding), template_own=False)
    return KnowledgeChoice((*template.knowledge, *adding), template_own=True)


def examples_text(template: Template, values: dict[str, str], template_knowledge: bool) -> str:
    """The few-shot examples as text. Examples marked `uses_knowledge` quote the
    template's own knowledge and are left out when the user's replaces it: a
    demo fact in an example would contradict the user's."""
    examples = [e for e in template.examples if template_knowledge or not e.uses_knowledge]
    # An example whose reply renders empty is left out: with a lookup tool the
    # support persona drops its "I can't see orders from here" (a 1.5B model
    # copied it rather than call the tool).
    replies = [(example.user, template.render_text(example.assistant, values)) for example in examples]
    replies = [(user, reply) for user, reply in replies if reply]
    if not replies:
        return ""
    lines = ["Examples of good replies:"]
    for user, reply in replies:
        lines += [f"Customer: {user}", f"You: {reply}", ""]
    return "\n".join(lines).strip()


def _system_prompt(
    template: Template, values: dict[str, str], override: str | None, knowledge: str, template_own: bool
) -> str:
    """The persona's system prompt: the template's (or -s's) with the knowledge
    given whole, and the template's examples."""
    if override is not None:
        return with_knowledge(override, knowledge)
    system = template.render_system(values, knowledge=knowledge)
    examples = examples_text(template, values, template_own)
    return f"{system}\n\n{examples}" if examples else system


def build_persona(
    template: Template,
    values: dict[str, str],
    engine: Engine | None,
    knowledge: KnowledgeChoice | None = None,
    system_override: str | None = None,
    mode: str = "auto",
    tiny_model: bool = False,
    judge_cache: Path | None = None,
    tool_names: Sequence[str] = (),
) -> Persona:
    """A Persona for `template`. Without an engine (--dry-run) token counts are
    estimated at four characters a token. `mode` is "auto" (by the knowledge's
    size and the model's, see `knowledge_sizes`), "whole" or "search".
    `judge_cache` keeps the coverage judge's calibration (jobs/coverage.py).
    `tool_names`: the tools the model may call, which the system prompt and
    examples may name (the template variable `tool_names`, "" when none)."""
    values = {**values, TOOL_NAMES_VARIABLE: ", ".join(tool_names)}
    count = engine.count_tokens if engine is not None else (lambda text: (len(text) + 3) // 4)
    context_size = engine.context_size if engine is not None else 4096
    sizes = knowledge_sizes(context_size, tiny_model)
    knowledge = knowledge or choose_knowledge(template)
    base = KnowledgeBase.from_files(list(knowledge.files), count)
    whole = base.full_text()
    fits_whole = mode == "whole" or mode == "auto" and count(whole) <= sizes.whole_tokens

    system = _system_prompt(template, values, system_override, whole if fits_whole else "", knowledge.template_own)

    retrieves = bool(base.passages) and not fits_whole
    render_user = functools.partial(_render_user, template, values, base if retrieves else None, sizes, count)
    greeting = template.render_greeting(values) if template.greeting else ""
    coverage = None
    if engine is not None and fits_whole and base.passages:
        topics = tuple(dict.fromkeys(p.heading for p in base.passages if p.heading))
        coverage = CoverageJudge(system, topics, model_key=engine.identity, cache_dir=judge_cache)

    texts_for = functools.partial(_texts_for, template, values)
    return Persona(
        name=template.name,
        system=system,
        greeting=greeting,
        render_user=render_user,
        knowledge=whole if fits_whole else "",
        facts=whole if base.passages else None,
        fallback=texts_for("").fallback,
        handover=texts_for("").handover,
        retrieves=retrieves,
        # On every model: on the 1.5B it turned invented answers into handovers
        # too, and took the right fact from no reply (benchmarks/README.md, "Support on the 1.5B").
        checks_answers=bool(base.passages),
        texts_for=texts_for,
        coverage=coverage,
        internal_names=tuple(path.name for path in knowledge.files),
        # Measured: made to call, the 1.5B looked the order up right; SmolLM2-135M
        # called it with "{{ORDER_ID}}" and echoed the raw result as its answer.
        looks_up_first=not tiny_model,
    )


def _render_user(
    template: Template,
    values: dict[str, str],
    searched: KnowledgeBase | None,
    sizes: KnowledgeSizes,
    count: Callable[[str], int],
    text: str,
) -> str:
    """The user message for `text`, with the passages found for it when the
    knowledge is `searched` rather than given whole."""
    context = ""
    if searched is not None:
        found = searched.search(text, sizes.retrieved_tokens, count)
        context = "\n\n".join(p.render() for p in found) or NOTHING_FOUND
    return template.render_prompt(values, text, context=context)


def _texts_for(template: Template, values: dict[str, str], message: str) -> PersonaTexts:
    """The template's fixed texts for the customer who wrote `message`: in
    their language (CUSTOMER_LANGUAGE_VARIABLE, for a template that has the
    text in it), naming the order they asked about."""
    said = {**values, CUSTOMER_LANGUAGE_VARIABLE: customer_language(message), ORDER_VARIABLE: ""}
    order = order_reference(message)
    text = lambda source, **more: template.render_text(source, {**said, **more}) if source else ""  # noqa: E731
    return PersonaTexts(
        fallback=text(template.fallback),
        handover=text(template.handover),
        no_order_lookup=text(template.no_order_lookup, **{ORDER_VARIABLE: order or ""}),
    )
