"""The names `--chat-template` accepts besides a file (light: no llama.cpp)."""

BUILTIN_NAMES = ("chatml", "llama3", "gemma", "plain")
