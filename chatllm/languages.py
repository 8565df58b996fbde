"""Language names and codes (`fr`, `French`, `zh-Hant`, `中文`) via langcodes, and
detection of the language a text is written in via py3langid."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from chatllm.errors import LanguageError

# Offered by shell completion for --to/--from; any valid tag is accepted.
COMMON_LANGUAGE_CODES = (
    "ar", "bn", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fr", "he", "hi", "hu",
    "id", "it", "ja", "ko", "ms", "nl", "no", "pl", "pt", "pt-BR", "ro", "ru", "sv", "sw",
    "th", "tr", "uk", "ur", "vi", "zh", "zh-Hans", "zh-Hant",
)


@dataclass(frozen=True)
class Language:
    tag: str  # BCP 47, e.g. "zh-Hant"
    name: str  # English name, e.g. "Chinese (Traditional)"
    autonym: str  # its own name, e.g. "中文（繁體）"

    def for_prompt(self) -> str:
        """How a prompt names it: 'Chinese (Traditional) (中文（繁體）)'."""
        return self.name if self.autonym == self.name else f"{self.name} ({self.autonym})"


def parse_language(text: str) -> Language:
    """A language from a code or a name in any language; LanguageError suggests
    close matches when nothing fits."""
    import langcodes

    cleaned = text.strip()
    language = None
    if cleaned:
        try:
            if langcodes.tag_is_valid(cleaned):
                candidate = langcodes.get(cleaned)
                if candidate.language and candidate.is_valid() and candidate.display_name() != f"Unknown language [{candidate.language}]":
                    language = candidate
            if language is None:
                language = langcodes.find(cleaned)
        except (LookupError, ValueError):
            language = None
    if language is None or not language.language or language.language == "und":
        raise LanguageError(f"unknown language '{text}'{_suggestion(cleaned)}")
    return Language(tag=language.to_tag(), name=language.display_name(), autonym=language.autonym())


def _suggestion(text: str) -> str:
    import langcodes

    names = {langcodes.get(code).display_name(): code for code in COMMON_LANGUAGE_CODES}
    close = [f"{name} ({names[name]})" for name in difflib.get_close_matches(text.title(), names, n=3, cutoff=0.6)]
    close += difflib.get_close_matches(text, COMMON_LANGUAGE_CODES, n=2, cutoff=0.7)
    if not close:
        return "; use a code such as fr, de, zh or a name such as French"
    return "; did you mean " + ", ".join(close) + "?"


def detect_language(text: str) -> Language | None:
    """The language `text` is most likely written in, or None when too little text."""
    sample = text[:4000]
    if sum(ch.isalpha() for ch in sample) < 12:
        return None
    import py3langid

    code, _score = py3langid.classify(sample)
    try:
        return parse_language(code)
    except LanguageError:
        return None
