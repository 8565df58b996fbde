"""Structured output: schemas, classify and extract, on every backend.

Unit tests on the fake engine and a scripted OpenAI-compatible server; the
embedded model for grammar-constrained decoding end to end, through the CLI,
`chatllm serve` with the official openai client, and llama-cpp-python's own
server behind the remote backend."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from chatllm.engine.base import EngineOptions, GenerationParams
from chatllm.engine.fake import FakeEngine
from chatllm.engine.grammar import json_schema_text, schema_to_gbnf
from chatllm.engine.openai import OpenAIEngine
from chatllm.errors import EngineError, UsageError
from chatllm.hub.models import resolve_model
from chatllm.jobs.classify import Classifier, parse_labels
from chatllm.jobs.extract import extract
from chatllm.jobs.schemas import SchemaMismatch, parse_schema, short_schema, validated
from chatllm.reply.meter import Meter
from tests.support.cli import run_chatllm
from tests.support.openai_servers import ScriptedServer, chunk, streaming

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
PARAMS = GenerationParams(temperature=0)


# ---------------------------------------------------------------- schemas


def test_the_short_syntax() -> None:
    schema = short_schema("name, age int, tags list, score float, ok bool, city: where they live")
    assert schema["required"] == ["name", "age", "tags", "score", "ok", "city"]
    assert schema["properties"]["age"] == {"type": "integer"}
    assert schema["properties"]["tags"] == {"type": "array", "items": {"type": "string"}}
    assert schema["properties"]["city"] == {"type": "string", "description": "where they live"}
    assert schema["additionalProperties"] is False
    assert short_schema("名字, 年龄 int")["required"] == ["名字", "年龄"]


def test_a_schema_from_a_file_inline_json_or_fields(tmp_path: Path) -> None:
    path = tmp_path / "person.json"
    path.write_text(json.dumps(PERSON))
    assert parse_schema(str(path)) == PERSON
    assert parse_schema(json.dumps(PERSON)) == PERSON
    assert parse_schema("name, age int") == short_schema("name, age int")


@pytest.mark.parametrize(
    "value, message",
    [
        ("{bad", "is not valid JSON"),
        ('{"type": "objekt"}', "is not a valid JSON Schema"),
        ("[1, 2]", "must be a JSON object"),
        ("name, age integr", "unknown type 'integr'"),
        ("name, name", "given twice"),
        ("   ", "is empty"),
    ],
)
def test_bad_schemas_are_usage_errors(value: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_schema(value)


def test_a_feature_no_grammar_can_express_is_named() -> None:
    with pytest.raises(UsageError, match="uses 'not'.*cannot be turned into a grammar"):
        schema_to_gbnf(json.dumps({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}))
    assert "root ::=" in schema_to_gbnf(json_schema_text(PERSON))


def test_strings_in_the_grammar_hold_no_raw_control_characters() -> None:
    """JSON strings may not hold a raw tab or line break; the converter's own
    rule allows them, chatllm's grammar must not."""
    rules = dict(line.split(" ::= ", 1) for line in schema_to_gbnf(json_schema_text(PERSON)).splitlines())
    assert rules["char"].startswith(r'[^"\\\x7F\x00-\x1F] | '), rules["char"]


def test_validation_names_the_field() -> None:
    assert validated('{"name": "Ana", "age": 3}', PERSON) == {"name": "Ana", "age": 3}
    with pytest.raises(SchemaMismatch, match="at 'age'"):
        validated('{"name": "Ana", "age": "three"}', PERSON)
    with pytest.raises(SchemaMismatch, match="is not JSON"):
        validated("Sure! Here it is", PERSON)


# ---------------------------------------------------------------- classify


def test_labels() -> None:
    assert parse_labels("正面, 负面 ,中性") == ("正面", "负面", "中性")
    assert parse_labels(lines=["a", "", "b"]) == ("a", "b")
    with pytest.raises(UsageError, match="no labels"):
        parse_labels(" , ")
    with pytest.raises(UsageError, match="given twice"):
        parse_labels("spam,ham,Spam")


def test_the_label_comes_from_the_engines_scores_with_probabilities() -> None:
    engine = FakeEngine()
    classifier = Classifier(Meter(engine), ("sports", "politics", "weather"), PARAMS)
    results = list(classifier.classify(["the weather is fine", "a politics story", "nothing"]))
    assert [r.labels for r in results[:2]] == [("weather",), ("politics",)]
    for result in results:
        assert len(result.labels) == 1 and result.labels[0] in ("sports", "politics", "weather")
        assert abs(sum(result.probabilities.values()) - 1) < 1e-3
    assert max(results[0].probabilities, key=results[0].probabilities.get) == "weather"


def test_calibration_is_off_by_default_and_takes_out_a_label_preference() -> None:
    """The content-free input ("N/A") names no label: calibrated, the shorter
    label's head start over the longer one is taken out."""
    engine = FakeEngine()
    text = "neither label is here"
    raw = Classifier(Meter(engine), ("up", "downwards"), PARAMS).classify_one(text).probabilities
    calibrated = Classifier(Meter(engine), ("up", "downwards"), PARAMS, calibrate=True).classify_one(text).probabilities
    assert raw["up"] > raw["downwards"]
    assert abs(calibrated["up"] - calibrated["downwards"]) < 1e-6


def test_the_instruction_prefix_is_shared_by_every_item() -> None:
    engine = FakeEngine()
    classifier = Classifier(Meter(engine), ("a", "b"), PARAMS)
    list(classifier.classify(["one", "two"]))
    assert engine.calls[0][0] == engine.calls[1][0]  # the same system message: its KV is reused


def test_multi_labels_and_remote_engines_go_through_a_schema() -> None:
    engine = FakeEngine(reply=lambda messages: '["sports", "weather"]')
    result = Classifier(Meter(engine), ("sports", "politics", "weather"), PARAMS, multi=True).classify_one("x")
    assert result.labels == ("sports", "weather") and result.probabilities is None
    engine = FakeEngine(reply=lambda messages: '["elections"]')
    with pytest.raises(EngineError, match="not one of the labels"):
        Classifier(Meter(engine), ("sports", "politics"), PARAMS, multi=True).classify_one("x")


def test_a_label_set_too_large_for_the_context_is_refused() -> None:
    labels = tuple(f"label number {n} with several words" for n in range(200))
    with pytest.raises(UsageError, match="more than the .*context"):
        Classifier(Meter(FakeEngine(context_size=512)), labels, PARAMS)


# ---------------------------------------------------------------- extract on a remote server


def test_the_remote_backend_sends_the_schema_and_validates_the_reply() -> None:
    with ScriptedServer() as server:
        server.route(
            "POST",
            "/v1/chat/completions",
            streaming(chunk('{"name": "Ana", '), chunk('"age": 34}'), chunk(finish="stop"), "data: [DONE]", ""),
        )
        engine = OpenAIEngine(resolve_model(f"openai:stub@{server.url}"), EngineOptions())
        assert extract(Meter(engine), PERSON, "Ana is 34.", PARAMS) == {"name": "Ana", "age": 34}
        sent = server.requests_to("/v1/chat/completions")[-1].body
        assert sent["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "reply", "schema": PERSON, "strict": True},
        }
        server.route(
            "POST",
            "/v1/chat/completions",
            streaming(chunk('{"name": "Ana", "age": "34"}'), chunk(finish="stop"), "data: [DONE]", ""),
        )
        with pytest.raises(SchemaMismatch, match="at 'age'.*may have ignored response_format"):
            extract(Meter(engine), PERSON, "Ana is 34.", PARAMS)
        engine.close()


# ---------------------------------------------------------------- serve


def test_serve_honours_response_format(served) -> None:
    served.engine.reply = lambda messages: '{"name": "Ana", "age": 34}'
    reply = served.client.chat.completions.create(
        model="fake.gguf",
        messages=[{"role": "user", "content": "Ana is 34"}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
    )
    assert json.loads(reply.choices[0].message.content) == {"name": "Ana", "age": 34}
    assert json.loads(served.engine.params[-1].json_schema) == PERSON
    served.client.chat.completions.create(
        model="fake.gguf", messages=[{"role": "user", "content": "x"}], response_format={"type": "json_object"}
    )
    assert json.loads(served.engine.params[-1].json_schema) == {"type": "object"}
    with pytest.raises(openai.BadRequestError, match="not a valid JSON Schema"):
        served.client.chat.completions.create(
            model="fake.gguf",
            messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}},
        )


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    "args",
    [
        ["extract", "--schema", "{bad"],
        ["extract", "--schema", '{"not": {}}'],
        ["extract"],
        ["classify", "--labels", "a,b,a"],
        ["classify", "--labels", ","],
        ["classify", "--labels", "a", "--labels-file", "x.txt"],
        ["run", "explain", "--schema", '{"type": "objekt"}'],
    ],
)
def test_bad_structured_input_is_one_line_and_nothing_on_stdout(args: list[str]) -> None:
    result = run_chatllm(*args, "--dry-run", input="some text\n")
    errors = result.stderr.decode().strip().splitlines()
    assert result.returncode in (1, 2) and len(errors) == 1 and errors[0].startswith("Error: ")
    assert result.stdout == b""


def test_dry_run_shows_the_schema_and_the_grammar() -> None:
    for args in (
        ["extract", "--schema", "name, age int"],
        ["run", "explain", "--schema", "name, age int"],
        ["classify", "-t", "sentiment"],
        ["chat", "--schema", "name, age int"],
    ):
        payload = json.loads(run_chatllm(*args, "--dry-run", input="Ana is 34\n").stdout)
        assert "root ::=" in payload["grammar"] and payload["schema"]


# ---------------------------------------------------------------- on the embedded model


@pytest.mark.slow
def test_extract_is_valid_at_a_high_temperature(embedded_model: Path, tmp_path: Path) -> None:
    texts = [
        "Maria Lopez, 34, lives in Valencia; write to maria@example.org.",
        "Kenji Sato (41) moved from Osaka to Lyon. Email: kenji.sato@example.net",
        "王芳，28岁，住在杭州，邮箱 wangfang@example.cn。",
    ]
    source = tmp_path / "people.txt"
    source.write_text("\n".join(texts * 2))
    result = run_chatllm(
        "extract",
        "--schema",
        "name, age int, city, email",
        "--jsonl",
        "--temperature",
        "1.5",
        "--seed",
        "7",
        str(source),
    )
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 6
    for line in lines:
        validated(line, short_schema("name, age int, city, email"))


@pytest.mark.slow
def test_classify_streams_one_label_per_line(embedded_model: Path) -> None:
    items = "I love it!\nTerrible, never again.\n东西很好，很满意。\nIt arrived on Monday.\n"
    result = run_chatllm("classify", "-t", "sentiment", input=items)
    assert result.returncode == 0, result.stderr.decode()
    assert [line in ("positive", "negative", "neutral") for line in result.stdout.decode().splitlines()] == [True] * 4
    result = run_chatllm("classify", "--labels", "表扬,投诉,咨询", "--json", input="你们的客服太棒了\n请问几点开门？\n")
    for line in result.stdout.decode().splitlines():
        payload = json.loads(line)
        assert payload["label"] in ("表扬", "投诉", "咨询") and payload["text"] == payload["label"]
        assert abs(sum(payload["probabilities"].values()) - 1) < 1e-3


@pytest.mark.slow
def test_run_and_a_template_schema_make_json(embedded_model: Path, tmp_path: Path) -> None:
    template = tmp_path / "people.yaml"
    template.write_text("name: people\nschema: 'name, age int'\nprompt: 'Who is in this text? {{ input }}'\n")
    result = run_chatllm("run", str(template), input="Ana is 34.", env={"CHATLLM_LOG": "0"})
    assert result.returncode == 0, result.stderr.decode()
    validated(result.stdout.decode(), short_schema("name, age int"))


@pytest.mark.slow
def test_chatllm_serve_constrains_replies_for_the_openai_client(chatllm_serve) -> None:
    client = chatllm_serve.extra["client"]
    reply = client.chat.completions.create(
        model="embedded",
        temperature=1.2,
        messages=[{"role": "user", "content": "Ana is 34 and lives in Porto."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
    )
    validated(reply.choices[0].message.content, PERSON)


@pytest.mark.slow
def test_the_remote_backend_against_llama_cpp_pythons_server(llama_server) -> None:
    engine = OpenAIEngine(resolve_model(f"openai:smollm@{llama_server.url}"), EngineOptions(n_ctx=2048))
    document = extract(Meter(engine), PERSON, "Ana is 34.", GenerationParams(temperature=1.0, seed=3))
    assert set(document) == {"name", "age"}
    engine.close()


def test_only_a_local_model_gets_the_grammar_check_whether_named_by_m_or_by_the_config() -> None:
    """A schema llama.cpp's grammar cannot express is refused before a local
    model loads; a model on a server checks schemas itself, also when it is
    config.yaml's default_model rather than -m."""
    schema = json.dumps({"type": "object", "not": {"required": ["x"]}})
    local = run_chatllm("run", "explain", "--schema", schema, "--dry-run", input="code")
    assert local.returncode == 2 and "'not'" in local.stderr.decode() and not local.stdout
    remote = "openai:stub@http://127.0.0.1:9/v1"
    assert run_chatllm("config", "set", "default_model", remote).returncode == 0
    for args in ([], ["-m", remote]):
        result = run_chatllm("run", "explain", "--schema", schema, "--dry-run", *args, input="code")
        assert result.returncode == 0, result.stderr.decode()
        payload = json.loads(result.stdout)
        assert payload["schema"] == json.loads(schema) and "grammar" not in payload  # the server's to check
