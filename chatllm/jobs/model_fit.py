"""Saying when a job needs a bigger model than the one in use.

The embedded model (SmolLM2-135M) is an English-first demo: it cannot
translate, reads other languages poorly and misses facts in long knowledge
(benchmarks/README.md, "Quality", has the figures). A user's first minutes are
on it, so chatllm says once, on stderr, when a job clearly exceeds a model that
small, and which catalog model does the job well. `hints: false` in the
settings (or CHATLLM_HINTS=0) turns this off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Models smaller than this (a 135M model at 4 bits is ~100 MB) are "tiny".
TINY_MODEL_BYTES = 200 * 1024**2
SUGGESTED_MODEL = "qwen2.5:1.5b"


def is_tiny(path: Path | None) -> bool:
    try:
        return path is not None and path.stat().st_size < TINY_MODEL_BYTES
    except OSError:
        return False


def _advice(model_name: str, reason: str) -> str:
    return (
        f"Note: {model_name} is a tiny English-first model and {reason}. For better results: "
        f"`chatllm models pull {SUGGESTED_MODEL}`, then -m {SUGGESTED_MODEL} (`chatllm config set hints false` hides this note)."
    )


@dataclass
class ModelFit:
    """The hint for one command: the first that applies, said once (one is
    enough to make the point). Disabled (`enabled=False`), for a model that is
    not tiny, or once a hint was given, every method returns None."""

    model_path: Path | None
    enabled: bool = True
    _said: set[str] = field(default_factory=set)

    @property
    def _name(self) -> str:
        return self.model_path.stem if self.model_path else "this model"

    def _once(self, key: str, reason: str) -> str | None:
        if not self.enabled or self._said or not is_tiny(self.model_path):
            return None
        self._said.add(key)
        return _advice(self._name, reason)

    def for_translation(self) -> str | None:
        return self._once("translate", "cannot translate reliably")

    def for_language(self, language_tag: str | None, language_name: str = "") -> str | None:
        """For input (or a message) in `language_tag`: a hint unless it is English."""
        if not language_tag or language_tag.split("-")[0] == "en":
            return None
        return self._once("language", f"reads and writes {language_name or language_tag} poorly")

    def for_knowledge(self, retrieved: bool) -> str | None:
        """For a persona whose knowledge is too long to give whole (it is searched)."""
        if not retrieved:
            return None
        return self._once("knowledge", "often misses or invents facts when answering from a long knowledge file")
