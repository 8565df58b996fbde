"""Building a conversation's persona from a template: the system prompt, few-shot
examples, greeting, and knowledge.

Knowledge that fits in part of the context goes into the system prompt whole,
where it is a fixed prefix the engine caches on disk. Knowledge too large for
that is indexed, and each turn carries only the passages relevant to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from chatllm.engine.base import Engine
from chatllm.jobs.chat import Persona, with_knowledge
from chatllm.jobs.knowledge import KnowledgeBase
from chatllm.templates import Template

# Share of the context that whole knowledge may take in the system prompt, and
# that retrieved passages may take in one turn.
WHOLE_KNOWLEDGE_SHARE = 0.5
RETRIEVED_SHARE = 0.3


def examples_text(template: Template) -> str:
    if not template.examples:
        return ""
    lines = ["Examples of good replies:"]
    for example in template.examples:
        lines += [f"Customer: {example.user}", f"You: {example.assistant}", ""]
    return "\n".join(lines).strip()


def build_persona(
    template: Template,
    values: dict[str, str],
    engine: Engine | None,
    extra_knowledge: Sequence[Path] = (),
    system_override: str | None = None,
) -> Persona:
    """A Persona for `template`. Without an engine (--dry-run) token counts are
    estimated at four characters a token."""
    count = engine.count_tokens if engine is not None else (lambda text: (len(text) + 3) // 4)
    context_size = engine.context_size if engine is not None else 4096
    knowledge = KnowledgeBase.from_files([*template.knowledge, *extra_knowledge], count)
    whole = knowledge.full_text()
    fits_whole = count(whole) <= context_size * WHOLE_KNOWLEDGE_SHARE

    if system_override is not None:
        system = with_knowledge(system_override, whole if fits_whole else "")
    else:
        system = template.render_system(values, knowledge=whole if fits_whole else "")
        examples = examples_text(template)
        if examples:
            system = f"{system}\n\n{examples}"

    def render_user(text: str) -> str:
        context = ""
        if knowledge.passages and not fits_whole:
            found = knowledge.search(text, int(context_size * RETRIEVED_SHARE), count)
            context = "\n\n".join(p.render() for p in found) or "(no passage in the knowledge matches this question)"
        return template.render_prompt(values, text, context=context)

    greeting = template.render_greeting(values) if template.greeting else ""
    return Persona(
        name=template.name, system=system, greeting=greeting, render_user=render_user,
        knowledge=whole if fits_whole else "",
    )
