"""The SQLite history store: round trips, migrations, concurrent writer
processes, and a process killed mid-reply. Every test uses a real database file."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chatllm.engine.base import GenerationParams
from chatllm.engine.fake import FakeEngine
from chatllm.errors import HistoryError
from chatllm.history.recording import ConversationRecorder, record_run
from chatllm.history.schema import MIGRATIONS, SCHEMA_VERSION
from chatllm.history.store import HistoryStore, history_path, title_of
from chatllm.jobs.chat import ChatSession, Persona
from chatllm.reply.events import text_of


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    return HistoryStore(tmp_path / "history.db")


def chat_session(
    store: HistoryStore, engine: FakeEngine | None = None, **recorder_options
) -> tuple[ChatSession, ConversationRecorder]:
    recorder = ConversationRecorder(
        model="fake.gguf", template="chat", params=GenerationParams(temperature=0.3), store=store, **recorder_options
    )
    session = ChatSession(
        engine or FakeEngine(), Persona("chat", "Be brief."), GenerationParams(temperature=0.3), on_turn=recorder
    )
    return session, recorder


def say(session: ChatSession, text: str) -> str:
    return text_of(session.send(text))


def test_the_default_database_is_in_the_user_data_folder(isolated_home: Path) -> None:
    assert history_path() == isolated_home / "data" / "chatllm" / "history.db"


def test_a_run_round_trips(store: HistoryStore) -> None:
    from chatllm.engine.base import GenerationStats, Usage

    stats = GenerationStats(usage=Usage(prompt_tokens=12, completion_tokens=5))
    conversation_id = record_run(
        model="m.gguf",
        template="summarize",
        output="Short.",
        stats=stats,
        prompt="A long text.",
        variables={"length": "short"},
        params=GenerationParams(temperature=0.2, stop=("###",)),
        store=store,
    )
    saved = store.get(conversation_id)
    assert (saved.kind, saved.model, saved.template, saved.title) == ("run", "m.gguf", "summarize", "A long text.")
    assert saved.variables == {"length": "short"}
    assert saved.params["temperature"] == 0.2 and saved.params["stop"] == ["###"]
    assert [(m.role, m.content) for m in saved.messages] == [("user", "A long text."), ("assistant", "Short.")]
    assert saved.messages[1].usage == {"prompt_tokens": 12, "completion_tokens": 5, "cached_prompt_tokens": 0}
    assert saved.messages[1].finish_reason == "stop" and "total_s" in saved.messages[1].timings


def test_a_chat_is_saved_turn_by_turn_and_restores(store: HistoryStore) -> None:
    session, recorder = chat_session(store)
    say(session, "hello there")
    assert len(store.get(recorder.conversation_id).messages) == 2  # committed before the next turn
    say(session, "second question")
    saved = store.get(recorder.conversation_id)
    assert (saved.kind, saved.system, saved.title) == ("chat", "Be brief.", "hello there")
    turns = saved.turns()
    assert [(t.user, t.reply) for t in turns] == [
        ("hello there", "Echo: hello there"),
        ("second question", "Echo: second question"),
    ]
    assert saved.messages[3].usage["cached_prompt_tokens"] > 0

    resumed, recorder2 = chat_session(store, conversation_id=saved.id, resumed_turns=len(turns))
    resumed.restore(turns)
    say(resumed, "third")
    assert [t.user for t in store.get(saved.id).turns()] == ["hello there", "second question", "third"]
    assert recorder2.conversation_id == saved.id
    assert store.last_id() == saved.id


def test_retry_replaces_the_reply_and_reset_starts_a_new_conversation(store: HistoryStore) -> None:
    replies = iter(["first answer", "better answer", "fresh start"])
    session, recorder = chat_session(store, FakeEngine(reply=lambda messages: next(replies)))
    say(session, "question")
    text_of(session.retry())
    first = store.get(recorder.conversation_id)
    assert [m.content for m in first.messages] == ["question", "better answer"]
    session.reset()
    say(session, "new topic")
    assert recorder.conversation_id != first.id
    assert [m.content for m in store.get(recorder.conversation_id).messages] == ["new topic", "fresh start"]


def test_an_interrupted_reply_is_kept_and_marked(store: HistoryStore) -> None:
    session, recorder = chat_session(store, FakeEngine(reply=lambda messages: "one two three four"))
    pieces = session.send("go")
    next(pieces)
    pieces.close()  # what Ctrl-C in the REPL does
    reply = store.get(recorder.conversation_id).messages[1]
    assert reply.interrupted and reply.content == "one"
    assert store.get(recorder.conversation_id).turns()[0].interrupted


def test_list_search_delete_and_errors(store: HistoryStore) -> None:
    for index in range(5):
        record_run(
            model="m.gguf", template="translate", output=f"out {index}", prompt=f"text number {index}", store=store
        )
    record_run(model="m.gguf", template="summarize", output="100% done_ok", prompt="zebra facts", store=store)
    assert [s.title for s in store.summaries(limit=2)] == ["zebra facts", "text number 4"]
    assert [s.title for s in store.summaries(search="ZEBRA")] == ["zebra facts"]
    assert [s.title for s in store.summaries(search="100%")] == ["zebra facts"]  # % is literal
    assert store.summaries(search="number 3")[0].message_count == 2
    assert store.last_id() is None  # runs are not chats
    store.delete(1)
    with pytest.raises(HistoryError, match="no conversation 1 in the history"):
        store.get(1)
    with pytest.raises(HistoryError, match="no conversation 1"):
        store.delete(1)
    new_id = record_run(model="m", template="t", output="o", store=store)
    assert new_id == 7  # IDs are never reused after rm


def test_titles_are_the_first_words_on_one_line() -> None:
    assert title_of("  hello\n  world ") == "hello world"
    assert title_of("word " * 40).endswith("…") and len(title_of("word " * 40)) <= 60


def test_a_version_1_file_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        old.execute(statement)
    old.execute("PRAGMA user_version = 1")
    old.execute(
        "INSERT INTO conversations (created, updated, title, model, template) VALUES ('2024-01-01T00:00:00+00:00', '2024-01-01T00:00:00+00:00', 'old chat', 'old.gguf', 'chat')"
    )
    old.execute(
        "INSERT INTO messages (conversation_id, idx, role, content, created) VALUES (1, 0, 'user', 'hi', 'x'), (1, 1, 'assistant', 'hello', 'x')"
    )
    old.commit()
    old.close()

    store = HistoryStore(path)
    saved = store.get(1)
    assert (saved.title, saved.kind, [t.reply for t in saved.turns()]) == ("old chat", "chat", ["hello"])
    assert store.last_id() == 1
    record_run(model="m", template="summarize", output="o", prompt="p", store=store)
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_file_from_a_newer_chatllm_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with sqlite3.connect(path) as newer:
        newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(HistoryError, match="newer chatllm"):
        HistoryStore(path).summaries()


def test_a_file_that_is_not_a_database_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(HistoryError, match=r"cannot read the history database .*history.db: file is not a database"):
        HistoryStore(path).summaries()


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from chatllm.engine.base import GenerationParams
    from chatllm.engine.fake import FakeEngine
    from chatllm.history.recording import ConversationRecorder, record_run
    from chatllm.history.store import HistoryStore
    from chatllm.jobs.chat import ChatSession, Persona
    from chatllm.reply.events import text_of

    name, path, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    store = HistoryStore(path)
    recorder = ConversationRecorder(model="fake.gguf", template="chat", store=store)
    session = ChatSession(FakeEngine(context_size=100_000), Persona("chat", ""), GenerationParams(), on_turn=recorder)
    sys.stdin.readline()  # start together
    for index in range(count):
        record_run(model="fake.gguf", template="summarize", output=f"{name} out {index}", prompt=f"{name} in {index}", store=store)
        text_of(session.send(f"{name} turn {index}"))
    print(recorder.conversation_id)
    """
)


def test_two_writer_processes_lose_nothing(tmp_path: Path) -> None:
    path, count = tmp_path / "history.db", 40
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, name, str(path), str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("alpha", "beta")
    ]
    for writer in writers:  # both are waiting on stdin: release them at once
        writer.stdin.write("go\n")
        writer.stdin.flush()
    chat_ids = []
    for writer in writers:
        out, _ = writer.communicate(timeout=120)
        assert writer.returncode == 0
        chat_ids.append(int(out.strip()))

    store = HistoryStore(path)
    runs = [s for s in store.summaries(limit=None) if s.kind == "run"]
    assert len(runs) == 2 * count
    for name, chat_id in zip(("alpha", "beta"), chat_ids):
        assert {s.title for s in runs if s.title.startswith(name)} == {f"{name} in {i}" for i in range(count)}
        turns = store.get(chat_id).turns()
        assert [t.user for t in turns] == [f"{name} turn {i}" for i in range(count)]
        assert all(t.reply == f"Echo: {t.user}" for t in turns)


KILLED = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from chatllm.engine.base import GenerationParams
    from chatllm.engine.fake import FakeEngine
    from chatllm.history.recording import ConversationRecorder
    from chatllm.history.store import HistoryStore
    from chatllm.jobs.chat import ChatSession, Persona

    class StallingEngine(FakeEngine):
        def stream(self, messages, params):
            if len(self.calls) < 2:
                yield from super().stream(messages, params)
                return
            self.calls.append(messages)
            yield "half a rep"
            print("mid-reply", flush=True)
            sys.stdin.read()  # hangs here until killed

    recorder = ConversationRecorder(model="fake.gguf", template="chat", store=HistoryStore(Path(sys.argv[1])))
    session = ChatSession(StallingEngine(), Persona("chat", "sys"), GenerationParams(), on_turn=recorder)
    for text in ("one", "two", "three"):
        for piece in session.send(text):
            pass
    """
)


def test_a_process_killed_mid_reply_leaves_earlier_turns_readable(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "mid-reply"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = HistoryStore(path)
    saved = store.get(store.last_id())
    assert [(t.user, t.reply) for t in saved.turns()] == [("one", "Echo: one"), ("two", "Echo: two")]
    record_run(model="m", template="t", output="still writable", store=store)


def test_an_immediate_database_is_locked_is_retried_and_a_lasting_one_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import chatllm.history.store as history

    store = HistoryStore(tmp_path / "history.db")
    real = HistoryStore._transaction
    refusals = []

    def refuse_twice(self, work, write):
        if len(refusals) < 2:  # what SQLite answers while another process recovers the WAL
            refusals.append(write)
            raise sqlite3.OperationalError("database is locked")
        return real(self, work, write)

    monkeypatch.setattr(HistoryStore, "_transaction", refuse_twice)
    conversation = record_run(model="m.gguf", template="summarize", output="out", prompt="in", store=store)
    assert refusals == [True, True]
    assert [s.id for s in store.summaries(limit=None)] == [conversation]

    monkeypatch.setattr(history, "BUSY_TIMEOUT_S", 0.2)
    monkeypatch.setattr(
        HistoryStore,
        "_transaction",
        lambda self, work, write: (_ for _ in ()).throw(sqlite3.OperationalError("database is locked")),
    )
    with pytest.raises(HistoryError, match="stayed locked by another chatllm"):
        record_run(model="m.gguf", template="summarize", output="out", prompt="in", store=store)
