"""Language names and codes (`fr`, `French`, `zh-Hant`, `中文`) via langcodes, and
detection of the language a text is written in via CLD2 (pycld2).

The common languages are answered from a table generated from langcodes
(language_names.py): importing langcodes and its name data costs about 100 ms
and 25 MB, more than chatllm's whole start-up budget."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from chatllm.errors import LanguageError
from chatllm.language_names import LANGUAGE_NAMES

# Offered by shell completion for --to/--from; any valid tag is accepted.
COMMON_LANGUAGE_CODES = (
    "ar",
    "bn",
    "cs",
    "da",
    "de",
    "el",
    "en",
    "es",
    "fa",
    "fi",
    "fr",
    "he",
    "hi",
    "hu",
    "id",
    "it",
    "ja",
    "ko",
    "ms",
    "nl",
    "no",
    "pl",
    "pt",
    "pt-BR",
    "ro",
    "ru",
    "sv",
    "sw",
    "th",
    "tr",
    "uk",
    "ur",
    "vi",
    "zh",
    "zh-Hans",
    "zh-Hant",
)

# CLD2 rejects as invalid UTF-8 the C0/C1 control characters other than
# whitespace, and Unicode's noncharacters (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF).
_REJECTED_BY_CLD2 = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufdd0-\ufdef"
    + "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(17))
    + "]"
)
# CLD2 still answers with the withdrawn codes for Hebrew and Javanese.
_CLD2_LEGACY_CODES = {"iw": "he", "jw": "jv"}


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
    cleaned = text.strip()
    return _common_language(cleaned) or _langcodes_language(text, cleaned)


def _common_language(text: str) -> Language | None:
    """The language from the generated table when `text` is one of its codes,
    English names or autonyms (compared case-insensitively)."""
    wanted = text.casefold().replace("_", "-")
    for code, (tag, name, autonym) in LANGUAGE_NAMES.items():
        if wanted in (code.casefold(), name.casefold(), autonym.casefold()):
            return Language(tag=tag, name=name, autonym=autonym)
    return None


def _langcodes_language(text: str, cleaned: str) -> Language:
    import langcodes

    language = None
    if cleaned:
        try:
            if langcodes.tag_is_valid(cleaned):
                candidate = langcodes.get(cleaned)
                if (
                    candidate.language
                    and candidate.is_valid()
                    and candidate.display_name() != f"Unknown language [{candidate.language}]"
                ):
                    language = candidate
            if language is None:
                language = langcodes.find(cleaned)
        except (LookupError, ValueError):
            language = None
    if language is None or not language.language or language.language == "und":
        raise LanguageError(f"unknown language '{text}'{_suggestion(cleaned)}")
    return Language(tag=language.to_tag(), name=language.display_name(), autonym=language.autonym())


def _suggestion(text: str) -> str:
    names = {name: code for code, (_tag, name, _autonym) in LANGUAGE_NAMES.items()}
    close = [f"{name} ({names[name]})" for name in difflib.get_close_matches(text.title(), names, n=3, cutoff=0.6)]
    close += difflib.get_close_matches(text, COMMON_LANGUAGE_CODES, n=2, cutoff=0.7)
    if not close:
        return "; use a code such as fr, de, zh or a name such as French"
    return "; did you mean " + ", ".join(close) + "?"


_FENCED = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SYMBOLS = re.compile(r"[=(){}\[\];<>|`$\\]")


def prose_of(text: str) -> str:
    """`text` without what is not written in a language: fenced code blocks,
    table rows, indented code and lines of code ("def f(x):", "x = 2 * y;")."""
    kept = []
    for line in _FENCED.sub("", text).splitlines():
        stripped = line.strip()
        if line.startswith(("    ", "\t")) or stripped.startswith("|"):
            continue
        if len(_CODE_SYMBOLS.findall(stripped)) >= 2 and not re.search(r"[.!?。！？]$", stripped):
            continue
        kept.append(line)
    return "\n".join(kept)


def detect_language(text: str) -> Language | None:
    """The language the prose of `text` (`prose_of`) is mostly written in, or
    None when there is too little of it or CLD2 is unsure: CLD2 reads code as
    Latin or Scots."""
    sample = _REJECTED_BY_CLD2.sub(" ", prose_of(text[:4000]))
    if sum(ch.isalpha() for ch in sample) < 12:
        return None
    import pycld2

    try:
        reliable, _bytes_found, details = pycld2.detect(sample.encode("utf-8", "ignore"))
    except pycld2.error:
        return None
    code = details[0][1]
    if not reliable or code == "un":
        return None
    code = _CLD2_LEGACY_CODES.get(code, code)
    try:
        return parse_language(code)
    except LanguageError:
        return None
