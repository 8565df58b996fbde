"""Errors a user can act on.

Every failure that is the user's input or environment (not a bug) is raised as a
ChatLLMError subclass. Only the CLI edge turns one into `Error: <message>` on
stderr and the exit code below; `--debug` shows the traceback as well.
"""

from __future__ import annotations


class ChatLLMError(Exception):
    """Base class: `str(error)` is the one-line message shown to the user."""

    exit_code = 1


class UsageError(ChatLLMError):
    """The command line itself is wrong (bad option value, missing argument)."""

    exit_code = 2


class InputError(ChatLLMError):
    """Input text or files that cannot be used: missing, a directory, empty, binary."""


class ModelError(ChatLLMError):
    """A model reference that does not resolve, or a file that is not a usable GGUF."""


class DownloadError(ModelError):
    """The Hub could not be reached, or a download failed or did not verify."""


class TemplateError(ChatLLMError):
    """A template that does not exist, does not parse, or lacks a required variable."""


class LanguageError(UsageError):
    """A language name or code that is not recognised."""


class EngineError(ChatLLMError):
    """The inference backend failed (model load, context overflow, remote server)."""


class ConfigError(ChatLLMError):
    """A malformed settings file or setting."""


class HistoryError(ChatLLMError):
    """The conversation store cannot be read or written, or an ID does not exist."""
