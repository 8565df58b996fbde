"""The limits every tool call runs under: one source for the tools package,
the command line's defaults (jobs/options.py) and the README."""

DEFAULT_TIMEOUT_S = 30.0  # per call; the tool is killed (a tools file's `timeout:` changes it per tool)
MAX_RESULT_BYTES = 64 * 1024  # of a result, as the model reads it; more is cut with a note
DEFAULT_TOOL_LIMIT = 8  # calls per reply (--tool-limit)
