"""Turning a template, its variables and the user's text into engine input, and
the token budgets around it."""

from __future__ import annotations

from collections.abc import Mapping

from chatllm.engine.base import Engine, GenerationParams, Message
from chatllm.engine.base import generation_params as params_from
from chatllm.errors import EngineError
from chatllm.templates import Template


def task_messages(
    template: Template, values: dict[str, str], input_text: str, system: str | None = None
) -> list[Message]:
    """System (the template's, or `system` when the user gave -s) and one user turn."""
    messages = []
    system_text = system if system is not None else template.render_system(values)
    if system_text:
        messages.append(Message("system", system_text))
    messages.append(Message("user", template.render_prompt(values, input_text)))
    return messages


def generation_params(template: Template | None, *layers: Mapping[str, object]) -> GenerationParams:
    """The template's defaults, overlaid with each layer of settings in turn
    (None = not given): the command line's options; for `serve`, its own
    options and then the request's."""
    settings: dict[str, object] = dict(template.defaults) if template is not None else {}
    for layer in layers:
        settings.update({k: v for k, v in layer.items() if v is not None})
    return params_from(settings)


def repetition_mode(template: Template | None, *given: str | None, tiny_model: bool = False) -> str:
    """How the repetition guard works for this template: the first mode given
    (--repetition; a request's, then `serve --repetition`), else the
    template's default, else `default_repetition` (jobs/repetition.py)."""
    declared = template.defaults.get("repetition") if template is not None else None
    chosen = next((mode for mode in given if mode), None)
    return chosen or str(declared or default_repetition(tiny_model))


def default_repetition(tiny_model: bool) -> str:
    """ "strict" on a tiny model, "loops" otherwise. Measured on the everyday
    questions of benchmarks/data/quality/chat with the embedded 135M model:
    with "loops" 3 of 22 chat replies repeated an 8-word or 16-character
    span, with "strict" none, and the same answers were right. A larger model
    rarely loops, and "strict" would stop the occasional legitimate restatement
    (8 of 89 texts in benchmarks/README.md, "Repetition")."""
    return "strict" if tiny_model else "loops"


def reply_reserve(params: GenerationParams, context_size: int) -> int:
    """Tokens kept free for the reply: max_tokens, or a quarter of the context."""
    if params.max_tokens is not None:
        return min(params.max_tokens, context_size // 2)
    return max(128, min(1024, context_size // 4))


def input_budget(
    engine: Engine, template: Template, values: dict[str, str], params: GenerationParams, system: str | None
) -> int:
    """Tokens of input that fit in one call beside the prompt and the reply."""
    overhead = engine.count_prompt_tokens(task_messages(template, values, "", system))
    budget = engine.context_size - overhead - reply_reserve(params, engine.context_size) - 8
    if budget < 64:
        raise EngineError(
            f"the context ({engine.context_size} tokens) is too small for this template; use a larger --ctx"
        )
    return budget
