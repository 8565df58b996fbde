"""Conversations in SQLite: every chat and one-shot run, saved in the user data
folder (`history.db`).

A conversation is a row in `conversations` (model, template or persona,
parameters, system prompt) and its messages in order (`messages`: role,
content, interrupted, usage and timings). A one-shot run (summarize,
translate, run) is a conversation of one exchange: the input and the output.

What callers can rely on:
- Every write is one short transaction, and a chat saves each turn as soon as
  its reply ends, so a crash or SIGKILL mid-reply leaves every earlier turn
  readable.
- Two chatllm processes can write at once: the database is in WAL mode, writes
  take the write lock up front (BEGIN IMMEDIATE) and wait for each other
  (busy timeout) instead of failing.
- The schema is versioned with `PRAGMA user_version`; opening an older file
  applies the missing MIGRATIONS in one transaction.
- Failures are HistoryError with a one-line message (unknown ID, a file that
  is not a database, a database locked for too long).
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatllm.config.settings import data_dir
from chatllm.errors import HistoryError
from chatllm.history.schema import migrate
from chatllm.jobs.chat import Turn
from chatllm.private_files import private_file, tighten
from chatllm.reply.tool_loop import steps_from_json

if TYPE_CHECKING:
    from chatllm.jobs.chat import Turn

# How long a write waits for another chatllm's transaction before giving up.
BUSY_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class StoredMessage:
    index: int  # position in the conversation; assigned when saved
    role: str
    content: str
    prompt: str | None = None
    interrupted: bool = False
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    created: str = ""
    reasoning: str | None = None  # a reasoning model's thinking, never part of `content`
    # The tools the reply called on its way, as reply/tool_loop.py's steps_json writes them.
    tools: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class ConversationSummary:
    """One line of `chatllm logs list`."""

    id: int
    created: str
    updated: str
    title: str
    model: str | None
    template: str | None
    kind: str
    message_count: int


@dataclass(frozen=True)
class Conversation:
    id: int
    created: str
    updated: str
    title: str
    model: str | None
    template: str | None
    kind: str  # "chat" or "run"
    params: dict[str, Any]
    variables: dict[str, Any]
    system: str | None
    messages: tuple[StoredMessage, ...]

    def turns(self) -> list[Turn]:
        """The messages as chat turns, for `ChatSession.restore`."""
        turns: list[Turn] = []
        for message in self.messages:
            if message.role == "user":
                turns.append(Turn(user=message.content, prompt=message.prompt or message.content))
            elif message.role == "assistant" and turns and not turns[-1].reply:
                turns[-1].reply, turns[-1].interrupted = message.content, message.interrupted
                turns[-1].tools = steps_from_json(message.tools)
        return turns


def history_path() -> Path:
    return data_dir() / "history.db"


# SQLite's files beside the database. It creates them with the database's own
# mode, so a private database gets private ones; those an older chatllm left
# looser are tightened with it.
SIDE_FILE_SUFFIXES = ("-wal", "-shm", "-journal")


class HistoryStore:
    """The database at `path` (default: history.db in the user data folder).
    Each operation opens its own short connection, so a store can be shared
    between threads and is never left holding a lock."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or history_path()
        self._checked = False

    # ------------------------------------------------------------ connections

    def _connect(self) -> sqlite3.Connection:
        try:
            private_file(self.path)  # before SQLite creates it world-readable
            for suffix in SIDE_FILE_SUFFIXES:
                tighten(self.path.with_name(self.path.name + suffix))
            # isolation_level=None: transactions are the explicit BEGINs below.
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise HistoryError(f"cannot open the history database {self.path}: {error}") from None
        try:
            connection.row_factory = sqlite3.Row
            connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            connection.execute("PRAGMA foreign_keys = ON")
            if not self._checked:
                if connection.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                    raise HistoryError(
                        f"the history database {self.path} cannot use WAL mode (is it on a network drive?)"
                    )
                migrate(connection, self.path)
                self._checked = True
            # NORMAL is safe in WAL mode: a committed turn survives a crash of
            # chatllm; only a power cut may lose the latest commits.
            connection.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            connection.close()
            raise
        return connection

    def _run(self, work: Any, write: bool = False) -> Any:
        """Call `work(connection)` in one transaction; sqlite errors become
        HistoryError. SQLite sometimes answers "database is locked" at once,
        without waiting out its busy timeout (another process recovering or
        checkpointing the WAL as it opens or closes the file): the transaction,
        rolled back, is then tried again until the timeout has passed."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                return self._transaction(work, write)
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error):
                    raise HistoryError(f"cannot use the history database {self.path}: {error}") from None
                if time.monotonic() >= deadline:
                    raise HistoryError(
                        f"the history database {self.path} stayed locked by another chatllm for {BUSY_TIMEOUT_S:.0f} s"
                    ) from None
                time.sleep(random.uniform(0.005, 0.05))  # apart from the other writer's retry
            except sqlite3.DatabaseError as error:
                raise HistoryError(
                    f"cannot read the history database {self.path}: {error} (move it aside to start a new one)"
                ) from None

    def _transaction(self, work: Any, write: bool) -> Any:
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = work(connection)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return result
        finally:
            connection.close()  # rolls back whatever is still open

    # ------------------------------------------------------------ writing

    def create_conversation(
        self,
        *,
        kind: str,
        model: str | None,
        template: str | None,
        title: str = "",
        params: Any = None,
        variables: Mapping[str, Any] | None = None,
        system: str | None = None,
        messages: list[StoredMessage] | None = None,
    ) -> int:
        """A new conversation with its first `messages`, in one transaction; its ID."""
        now = _now()

        def work(connection: sqlite3.Connection) -> int:
            cursor = connection.execute(
                "INSERT INTO conversations (created, updated, title, model, template, params, variables, system, kind)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now, now, title, model, template, _json(params), _json(variables), system, kind),
            )
            conversation_id = int(cursor.lastrowid or 0)
            self._insert(connection, conversation_id, messages or [], now)
            return conversation_id

        return self._run(work, write=True)

    def append_messages(
        self,
        conversation_id: int,
        messages: list[StoredMessage],
        *,
        title: str | None = None,
        system: str | None = None,
    ) -> None:
        """Add messages after the conversation's last one, in one transaction."""

        def work(connection: sqlite3.Connection) -> None:
            self._require(connection, conversation_id)
            now = _now()
            self._insert(connection, conversation_id, messages, now)
            self._touch(connection, conversation_id, now, title, system)
            # Only chats append: a run continued with `chat --conversation ID`
            # has become a chat, and `chat --continue` should find it.
            connection.execute("UPDATE conversations SET kind = 'chat' WHERE id = ?", (conversation_id,))

        self._run(work, write=True)

    def replace_last_reply(self, conversation_id: int, message: StoredMessage, *, system: str | None = None) -> None:
        """Overwrite the conversation's last assistant message (a retried reply)."""

        def work(connection: sqlite3.Connection) -> None:
            self._require(connection, conversation_id)
            now = _now()
            connection.execute(
                "UPDATE messages SET content = ?, interrupted = ?, finish_reason = ?, usage = ?, timings = ?, created = ?,"
                " reasoning = ?, tools = ? WHERE conversation_id = ? AND idx = (SELECT MAX(idx) FROM messages"
                " WHERE conversation_id = ? AND role = 'assistant')",
                (
                    message.content,
                    int(message.interrupted),
                    message.finish_reason,
                    _json(message.usage),
                    _json(message.timings),
                    now,
                    message.reasoning,
                    _json(message.tools),
                    conversation_id,
                    conversation_id,
                ),
            )
            self._touch(connection, conversation_id, now, None, system)

        self._run(work, write=True)

    def delete(self, conversation_id: int) -> None:
        def work(connection: sqlite3.Connection) -> None:
            self._require(connection, conversation_id)
            connection.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

        self._run(work, write=True)

    # ------------------------------------------------------------ reading

    def get(self, conversation_id: int) -> Conversation:
        def work(connection: sqlite3.Connection) -> Conversation:
            row = self._require(connection, conversation_id)
            messages = connection.execute(
                "SELECT * FROM messages WHERE conversation_id = ? ORDER BY idx", (conversation_id,)
            ).fetchall()
            return Conversation(
                id=row["id"],
                created=row["created"],
                updated=row["updated"],
                title=row["title"],
                model=row["model"],
                template=row["template"],
                kind=row["kind"],
                params=_unjson(row["params"]) or {},
                variables=_unjson(row["variables"]) or {},
                system=row["system"],
                messages=tuple(
                    StoredMessage(
                        index=m["idx"],
                        role=m["role"],
                        content=m["content"],
                        prompt=m["prompt"],
                        interrupted=bool(m["interrupted"]),
                        finish_reason=m["finish_reason"],
                        usage=_unjson(m["usage"]),
                        timings=_unjson(m["timings"]),
                        created=m["created"],
                        reasoning=m["reasoning"],
                        tools=_unjson(m["tools"]),
                    )
                    for m in messages
                ),
            )

        return self._run(work)

    def summaries(self, limit: int | None = 20, search: str | None = None) -> list[ConversationSummary]:
        """Newest first; `search` matches title, model, template and message text
        (case-insensitive for ASCII)."""
        where, arguments = "", []
        if search:
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where = (
                "WHERE c.title LIKE ?1 ESCAPE '\\' OR c.model LIKE ?1 ESCAPE '\\' OR c.template LIKE ?1 ESCAPE '\\'"
                " OR EXISTS (SELECT 1 FROM messages s WHERE s.conversation_id = c.id AND s.content LIKE ?1 ESCAPE '\\')"
            )
            arguments.append(pattern)
        query = (
            "SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS message_count"
            f" FROM conversations c {where} ORDER BY c.updated DESC, c.id DESC"
        )
        if limit is not None:
            query += f" LIMIT {int(limit)}"

        def work(connection: sqlite3.Connection) -> list[ConversationSummary]:
            return [
                ConversationSummary(
                    id=r["id"],
                    created=r["created"],
                    updated=r["updated"],
                    title=r["title"],
                    model=r["model"],
                    template=r["template"],
                    kind=r["kind"],
                    message_count=r["message_count"],
                )
                for r in connection.execute(query, arguments)
            ]

        return self._run(work)

    def last_id(self, kind: str | None = "chat") -> int | None:
        query = (
            "SELECT id FROM conversations"
            + (" WHERE kind = ?" if kind else "")
            + " ORDER BY updated DESC, id DESC LIMIT 1"
        )
        row = self._run(lambda connection: connection.execute(query, (kind,) if kind else ()).fetchone())
        return None if row is None else int(row[0])

    # ------------------------------------------------------------ helpers

    def _require(self, connection: sqlite3.Connection, conversation_id: int) -> sqlite3.Row:
        row = connection.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise HistoryError(f"no conversation {conversation_id} in the history (see `chatllm logs list`)")
        return row

    def _insert(
        self, connection: sqlite3.Connection, conversation_id: int, messages: list[StoredMessage], now: str
    ) -> None:
        # MAX(idx) inside the write transaction: two processes continuing the
        # same conversation both append, neither overwrites.
        start = connection.execute(
            "SELECT COALESCE(MAX(idx) + 1, 0) FROM messages WHERE conversation_id = ?", (conversation_id,)
        ).fetchone()[0]
        for offset, message in enumerate(messages):
            connection.execute(
                "INSERT INTO messages (conversation_id, idx, role, content, prompt, interrupted, finish_reason, usage, timings,"
                " created, reasoning, tools) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    start + offset,
                    message.role,
                    message.content,
                    message.prompt,
                    int(message.interrupted),
                    message.finish_reason,
                    _json(message.usage),
                    _json(message.timings),
                    now,
                    message.reasoning,
                    _json(message.tools),
                ),
            )

    def _touch(
        self, connection: sqlite3.Connection, conversation_id: int, now: str, title: str | None, system: str | None
    ) -> None:
        connection.execute(
            "UPDATE conversations SET updated = ?, title = CASE WHEN title = '' AND ? IS NOT NULL THEN ? ELSE title END,"
            " system = COALESCE(?, system) WHERE id = ?",
            (now, title, title, system, conversation_id),
        )


# ---------------------------------------------------------------- conveniences


def load_conversation(conversation_id: int) -> Conversation:
    """The conversation with this ID (its `.turns()` feed `ChatSession.restore`)."""
    return HistoryStore().get(conversation_id)


def last_conversation_id() -> int | None:
    """The most recently updated chat (one-shot runs are skipped), or None."""
    return HistoryStore().last_id("chat")


def recent_conversations(limit: int | None = 20, search: str | None = None) -> list[ConversationSummary]:
    return HistoryStore().summaries(limit, search)


def delete_conversation(conversation_id: int) -> None:
    HistoryStore().delete(conversation_id)


def title_of(text: str, limit: int = 60) -> str:
    """The first words of `text` on one line, at most `limit` characters."""
    words = " ".join(text.split())
    return words if len(words) <= limit else words[: limit - 1].rsplit(" ", 1)[0] + "…"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _json(value: Any) -> str | None:
    if value is None:
        return None
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _unjson(text: str | None) -> Any:
    return None if text is None else json.loads(text)
