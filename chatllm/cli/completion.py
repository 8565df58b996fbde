"""Shell-completion callbacks. They run on every <TAB>, so they import nothing
heavy and never load a model or touch the network."""

from __future__ import annotations


def model_references(incomplete: str) -> list[str]:
    choices = ["embedded"]
    try:
        from chatllm import catalog

        choices += catalog.alias_names()
    except Exception:  # completion must never fail loudly
        pass
    try:
        from chatllm import hub

        choices += hub.cached_model_references()
    except Exception:
        pass
    return [c for c in choices if c.startswith(incomplete)]


def template_names(incomplete: str) -> list[str]:
    from chatllm.templates import template_files

    return [name for name in template_files() if name.startswith(incomplete)]


def persona_names(incomplete: str) -> list[str]:
    from chatllm.templates import load_template, template_files

    names = []
    for name in template_files():
        try:
            if name.startswith(incomplete) and load_template(name).kind == "persona":
                names.append(name)
        except Exception:
            continue
    return names


def language_codes(incomplete: str) -> list[str]:
    from chatllm.languages import COMMON_LANGUAGE_CODES

    return [code for code in COMMON_LANGUAGE_CODES if code.lower().startswith(incomplete.lower())]
