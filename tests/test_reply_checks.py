"""What makes a reply no summary or no translation, and what the jobs do then
(jobs/summarize.py, jobs/translate.py, jobs/numbers.py): written again once,
then a note or a failure, never printed as if it were the answer."""

from __future__ import annotations

import pytest

from chatllm.engine.base import GenerationParams
from chatllm.engine.fake import FakeEngine
from chatllm.errors import EngineError
from chatllm.jobs.numbers import number_problems, number_values
from chatllm.jobs.summarize import summarize, summary_problem
from chatllm.jobs.translate import translate, translation_problems, untranslated_fragments
from chatllm.reply.events import Event, text_of
from chatllm.reply.meter import Meter
from chatllm.templates import load_template

PARAMS = GenerationParams(temperature=0)
ARTICLE = "The council approved about 240 million euros for 40 electric buses, which are expected next spring."


@pytest.mark.parametrize(
    "text, language, values",
    [
        ("about 240 million euros, 1,200 people, in December 2022", "en", {"240000000", "1200", "12", "2022"}),
        ("约2.4亿欧元，1200人，2022年12月", "zh", {"240000000", "1200", "12", "2022"}),
        ("environ deux cent quarante millions d'euros, 1 200 personnes", "fr", {"240000000", "1200"}),
        ("24000万欧元，十八个月，百分之十五", "zh", {"240000000", "18", "15"}),
        ("eighteen months, 4.5 hours, two depots", "en", {"18"}),  # up to 10 is not compared
        ("a £23.4 million plan, past 23:00", "en", {"23400000", "23"}),
    ],
)
def test_numbers_are_read_as_values_whatever_their_form(text: str, language: str, values: set[str]) -> None:
    assert {f"{value:f}" for value in number_values(text, language)} == values


def test_a_translation_must_keep_every_number_and_add_none() -> None:
    assert number_problems(ARTICLE, "理事会批准约2.4亿欧元购买40辆电动公交车，预计明年春天上路。", "en", "zh") == []
    assert number_problems(ARTICLE, "理事会于2022年2月批准约24亿欧元购买40辆电动公交车。", "en", "zh") == [
        "240000000 missing",
        "2022, 2400000000 added",
    ]


def test_words_left_in_the_source_script_are_untranslated() -> None:
    assert untranslated_fragments("我们提供human客服和售后服务。", "We offer human客服 and after-sales service.") == [
        "客服"
    ]
    assert untranslated_fragments("The new buses are quieter.", "新的公交车更quieter。") == ["quieter"]
    # Names, acronyms and code may stay as they are.
    assert untranslated_fragments("Nordlicht uses the EU API `get_bus`.", "Nordlicht使用EU的API `get_bus`。") == []


def test_a_copy_of_the_source_is_not_in_the_asked_language() -> None:
    assert translation_problems(ARTICLE, ARTICLE, "en", "fr") == ["not in the asked language"]
    assert translation_problems("城市新增40辆电动公交车，明年春天上路。", ARTICLE, "zh", "zh") == [
        "not in the asked language"
    ]
    # A short French sentence CLD2 takes for English is not a copy: it is French.
    assert translation_problems("The question of the city.", "La question est question de la ville.", "en", "fr") == []


def test_a_paragraph_with_a_wrong_number_is_translated_again_and_the_better_try_kept() -> None:
    template = load_template("translate")
    values = template.resolve_variables({"to": "Chinese", "from": "English"})
    tries = iter(["理事会批准约24亿欧元购买40辆电动公交车。", "理事会批准约2.4亿欧元购买40辆电动公交车。"])
    engine = FakeEngine(reply=lambda messages: next(tries))
    meter = Meter(engine)
    assert text_of(translate(meter, template, values, ARTICLE, PARAMS)) == "理事会批准约2.4亿欧元购买40辆电动公交车。"
    assert len(engine.calls) == 2 and meter.finish_note() is None

    tries = iter(["理事会批准约24亿欧元。", "理事会批准约24亿欧元购买电动公交车。"])
    meter = Meter(engine)
    text_of(translate(meter, template, values, ARTICLE, PARAMS))
    assert "Paragraph 1: 40, 240000000 missing" in meter.finish_note()


def test_a_paragraph_twice_left_in_its_language_fails_the_job_after_the_rest() -> None:
    template = load_template("translate")
    values = template.resolve_variables({"to": "French", "from": "English"})
    source = "Le premier paragraphe parle de la ville.\n\n" + ARTICLE
    engine = FakeEngine(reply=lambda messages: messages[-1].content.split(":\n\n", 1)[1])  # copies its source
    shown: list[Event] = []
    with pytest.raises(EngineError, match="paragraph 2 could not be translated into French"):
        shown.extend(translate(Meter(engine), template, values, source, PARAMS))
    assert text_of(shown).strip() == "Le premier paragraphe parle de la ville."  # the copy is not printed


@pytest.mark.parametrize(
    "summary, problem",
    [
        ("", "all repeats or invented numbers"),
        ("。2. ", "a fragment"),
        ("谢谢。 谢谢。 谢谢 P.P.A.", "a fragment"),
        ("从上下文中，我们可以看到，在2025年4月12日，沈嘉怡的回复是：", "an opening with nothing after it"),
        ("暴雨明天来了。", ""),
        ("1. 暴雨预计持续到周五。", "a copy of"),  # its title or first line, numbered
        ("| `template_id` | 字符串 | 是 | 模板 |\n| `out_id` | 字符串 | 否 | 编号 |", "a copy of"),
        ("1. 即日起执行\n2. 王蕾\n3. 连接池上限的调整\n4. 只改了一个配置", "a list of fragments"),
        ("- 暴雨持续到周五。\n- 市民应避免外出。\n- 学校停课两天。", ""),  # a list of sentences is a summary
        ("Dear Customer Relations team,\n\nSubject: Formal Complaint – repeated outages", "no whole sentence"),
        ("1. 请求地址：https://api.example/v1/sms", "a copy of a line of the text"),
        ("Title: Rainstorm. Introduction: In recent years, China has been hit by storms.", "in English"),
        ("暴雨预计持续到周五，市民应避免外出。", ""),
    ],
)
def test_what_is_no_summary(summary: str, problem: str) -> None:
    source = (
        "1. 请求地址：https://api.example/v1/sms\n暴雨预计持续到周五。市民应避免不必要的外出，注意安全。\n"
        "| `template_id` | 字符串 | 是 | 模板 |\n| `out_id` | 字符串 | 否 | 编号 |"
    )
    found = summary_problem(summary, source, "zh")
    assert (problem in found) if problem else found == ""


def test_a_list_of_fragments_is_a_summary_when_bullets_were_asked_for() -> None:
    summary = "- 即日起执行\n- 连接池上限的调整\n- 回调改成异步处理"
    assert "fragments" in summary_problem(summary, "连接池上限即日起调整，回调改成异步处理。", "zh")
    assert summary_problem(summary, "连接池上限即日起调整，回调改成异步处理。", "zh", bullets=True) == ""


def test_a_summary_in_another_language_is_written_again_and_twice_is_an_error() -> None:
    template = load_template("summarize")
    values = template.resolve_variables({"lang": "Chinese (中文)"})
    source = "暴雨预计持续到周五。市民应避免不必要的外出，注意安全。学校停课两天，地铁照常运行。" * 3
    english = "Title: Rainstorm warning. Introduction: In recent years, the city has seen heavy storms."
    tries = iter([english, "暴雨持续到周五，学校停课，市民应避免外出。"])
    engine = FakeEngine(context_size=4096, reply=lambda messages: next(tries))
    meter = Meter(engine)
    assert text_of(summarize(meter, template, values, source, PARAMS)) == "暴雨持续到周五，学校停课，市民应避免外出。"
    assert "in English" in meter.finish_note() and "characters" in engine.calls[0][-1].content

    tries = iter([english, english])
    shown: list[Event] = []
    with pytest.raises(EngineError, match="no usable summary: twice, its reply was in English"):
        shown.extend(summarize(Meter(engine), template, values, source, PARAMS))
    assert shown == []
