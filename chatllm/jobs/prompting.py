"""Turning a template, its variables and the user's text into engine input."""

from __future__ import annotations

from dataclasses import fields

from chatllm.engine.base import GenerationParams, Message
from chatllm.templates import Template


def task_messages(template: Template, values: dict[str, str], input_text: str, system: str | None = None) -> list[Message]:
    """System (the template's, or `system` when the user gave -s) and one user turn."""
    messages = []
    system_text = system if system is not None else template.render_system(values)
    if system_text:
        messages.append(Message("system", system_text))
    messages.append(Message("user", template.render_prompt(values, input_text)))
    return messages


def generation_params(template: Template, **overrides: object) -> GenerationParams:
    """The template's defaults overlaid with the options the user gave (None = not given)."""
    known = {f.name for f in fields(GenerationParams)}
    settings: dict[str, object] = {k: v for k, v in template.defaults.items() if k in known}
    settings.update({k: v for k, v in overrides.items() if v is not None and k in known})
    if "stop" in settings:
        stop = settings["stop"]
        settings["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)  # type: ignore[arg-type]
    return GenerationParams(**settings)  # type: ignore[arg-type]


def reply_reserve(params: GenerationParams, context_size: int) -> int:
    """Tokens kept free for the reply: max_tokens, or a quarter of the context."""
    if params.max_tokens is not None:
        return min(params.max_tokens, context_size // 2)
    return max(128, min(1024, context_size // 4))
