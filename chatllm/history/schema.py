"""The history database's schema: tables, and the migrations that bring a file
written by any earlier chatllm up to date (`PRAGMA user_version` counts the
migrations applied)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from chatllm.errors import HistoryError

# Each entry upgrades the schema by one version; never edit a released entry,
# append a new one (files written by older chatllm versions are upgraded in place).
MIGRATIONS: list[tuple[str, ...]] = [
    (  # 1: conversations and their messages
        """CREATE TABLE conversations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: a removed ID never comes back
            created TEXT NOT NULL,                 -- ISO 8601, UTC
            updated TEXT NOT NULL,
            title TEXT NOT NULL DEFAULT '',
            model TEXT,
            template TEXT,                         -- template or persona name
            params TEXT,                           -- JSON: generation parameters
            variables TEXT,                        -- JSON: template variables
            system TEXT
        )""",
        """CREATE TABLE messages (
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            role TEXT NOT NULL,                    -- user | assistant
            content TEXT NOT NULL,                 -- what the user typed, or the reply
            prompt TEXT,                           -- the user message as sent, when it differs (retrieved knowledge)
            interrupted INTEGER NOT NULL DEFAULT 0,
            finish_reason TEXT,
            usage TEXT,                            -- JSON, OpenAI's names
            timings TEXT,                          -- JSON
            created TEXT NOT NULL,
            PRIMARY KEY (conversation_id, idx)
        )""",
    ),
    (  # 2: tell chats from one-shot runs, so `chat --continue` resumes a chat
        "ALTER TABLE conversations ADD COLUMN kind TEXT NOT NULL DEFAULT 'chat'",
        "CREATE INDEX conversations_by_kind_and_update ON conversations(kind, updated)",
    ),
    (  # 3: a reasoning model's thinking, kept apart from its reply's content
        "ALTER TABLE messages ADD COLUMN reasoning TEXT",
    ),
    (  # 4: the tools a reply called on its way (JSON: steps of text, calls and results; reply/tool_loop.py)
        "ALTER TABLE messages ADD COLUMN tools TEXT",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(connection: sqlite3.Connection, path: Path) -> None:
    """Apply the migrations `connection`'s database lacks, all in one transaction
    (an interrupted upgrade leaves the file as it was)."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise HistoryError(
            f"the history database {path} was written by a newer chatllm (schema {version}); upgrade chatllm to read it"
        )
    if version == SCHEMA_VERSION:
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock: another process may have just migrated.
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        for number in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[number]:
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {number + 1}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
