"""Language names and detection: the generated table agrees with langcodes, and
CLD2 names the language of real text in the scripts chatllm's users write."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chatllm.errors import LanguageError
from chatllm.language_names import LANGUAGE_NAMES
from chatllm.languages import Language, _langcodes_language, detect_language, parse_language

ROOT = Path(__file__).resolve().parent.parent


def test_generated_table_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_language_names.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("code", sorted(LANGUAGE_NAMES))
def test_table_answers_what_langcodes_would(code: str) -> None:
    tag, name, autonym = LANGUAGE_NAMES[code]
    for spelling in (code, code.upper()):
        assert parse_language(spelling) == _langcodes_language(spelling, spelling), spelling
    # A name reads back as its own entry; langcodes.find can't read "中文（繁體）"
    # and reads "Portuguese (Brazil)" as plain pt.
    for spelling in (name, autonym, name.upper()):
        assert parse_language(spelling) == Language(tag, name, autonym), spelling


def test_other_languages_still_go_through_langcodes() -> None:
    assert parse_language("Icelandic").tag == "is"
    assert parse_language("yue").name.startswith("Cantonese")
    with pytest.raises(LanguageError, match="unknown language 'Frnch'.*French"):
        parse_language("Frnch")


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("The quarterly report shows that revenue grew by twelve percent, driven by new customers.", "en"),
        ("Le rapport trimestriel montre que le chiffre d'affaires a augmenté de douze pour cent.", "fr"),
        ("Der Quartalsbericht zeigt, dass der Umsatz um zwölf Prozent gestiegen ist.", "de"),
        ("季度报告显示，收入增长了百分之十二，主要得益于欧洲和亚洲的新客户。", "zh"),
        ("季度報告顯示，收入增長了百分之十二，主要得益於歐洲和亞洲的新客戶。", "zh-Hant"),
        ("四半期報告書によると、売上高は主にヨーロッパとアジアの新規顧客によって増加しました。", "ja"),
        ("Квартальный отчёт показывает, что выручка выросла на двенадцать процентов.", "ru"),
        ("שלום לכולם, מה שלומכם היום? הכל בסדר אצלנו בבית.", "he"),  # CLD2 says 'iw'
    ],
)
def test_detects_the_language_of_a_text(text: str, tag: str) -> None:
    detected = detect_language(text)
    assert detected is not None and detected.tag == tag


def test_too_little_text_or_odd_bytes_detect_nothing_and_never_raise() -> None:
    assert detect_language("ok 42 !") is None
    assert detect_language("1234 5678 ---- ****") is None
    # C1 controls and lone surrogates (from undecodable input) would make CLD2 raise.
    assert detect_language("x\x85y hello world, this is plain English text \udcff here").tag == "en"
    # So would Unicode noncharacters, which are valid in Python strings and files.
    assert detect_language("hello world \ufdd0, this is plain English text \U0010ffff here \uffff").tag == "en"


def test_cld2s_withdrawn_codes_come_back_as_current_tags_without_langcodes(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "langcodes", None)  # importing it would now fail
    assert detect_language("שלום לכולם, מה שלומכם היום? הכל בסדר אצלנו בבית.").tag == "he"
