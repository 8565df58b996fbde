"""Placeholder: the prompt-toolkit REPL is being written."""


def run_repl(session, options, config, model) -> None:
    from chatllm.cli.chat import _chat_lines

    _chat_lines(session, options, config, model)
