"""Shell completion: the committed scripts are what the app generates, and real
bash (sourcing completions/chatllm.bash) completes commands, options and values."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from chatllm.cli.completion import COMPLETE_VARIABLE, join_colon_pieces
from chatllm.cli.completion_scripts import NOTE, SCRIPT_FILES, completion_script, default_folder, main, stale_scripts
from tests.support.cli import cli_env

COMPLETIONS = default_folder()


def bash_complete(*words: str) -> list[str]:
    """What bash's completion function puts in COMPREPLY for `words` (the last
    one being completed), exactly as bash calls it on <TAB>."""
    script = (
        f"source {shlex.quote(str(COMPLETIONS / 'chatllm.bash'))}\n"
        f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        "_chatllm_completion chatllm\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return [line for line in result.stdout.splitlines() if line]


def test_committed_scripts_are_fresh() -> None:
    stale = stale_scripts(COMPLETIONS)
    assert not stale, f"run `python scripts/generate_completions.py`: {', '.join(map(str, stale))} are stale"


def test_the_generator_writes_and_checks(tmp_path: Path) -> None:
    assert main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SCRIPT_FILES.values())
    assert main([str(tmp_path), "--check"]) == 0
    (tmp_path / "chatllm.bash").write_text("# edited by hand\n")
    assert main([str(tmp_path), "--check"]) == 1
    assert (tmp_path / "_chatllm").read_text().startswith("#compdef chatllm\n")  # zsh needs it first


needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")


@needs_bash
def test_bash_completes_commands_and_language_codes() -> None:
    assert "translate" in bash_complete("chatllm", "tr")
    codes = bash_complete("chatllm", "translate", "--to", "f")
    assert "fr" in codes and all(code.startswith("f") for code in codes)
    assert "de" in bash_complete("chatllm", "translate", "--from", "d")


@needs_bash
def test_bash_completes_options_models_templates_personas_and_settings() -> None:
    assert {"--to", "--temperature"} <= set(bash_complete("chatllm", "translate", "--t"))
    assert bash_complete("chatllm", "chat", "-m", "embed") == ["embedded"]
    assert "summarize" in bash_complete("chatllm", "run", "")
    assert "support" in bash_complete("chatllm", "chat", "--persona", "")
    assert "commands.translate.to" in bash_complete("chatllm", "config", "set", "commands.tr")


@needs_bash
def test_bash_completes_model_aliases_split_at_colons() -> None:
    from chatllm.hub.catalog import alias_names

    alias = next((name for name in alias_names() if ":" in name), None)
    if alias is None:
        pytest.skip("no catalog alias has a colon")
    before, _, after = alias.partition(":")
    # bash splits `qwen3:0.6b` into `qwen3` `:` `0.6b` and replaces only what follows the colon.
    assert after in bash_complete("chatllm", "chat", "-m", before, ":", after[:1])
    assert after in bash_complete("chatllm", "chat", "-m", before, ":")
    assert join_colon_pieces(["-m", "hf", ":", "org/repo", ":", "Q4"]) == ["-m", "hf:org/repo:Q4"]


@needs_bash
def test_bash_leaves_file_arguments_to_the_shell_and_completes_conversation_ids() -> None:
    assert bash_complete("chatllm", "summarize", "") == []  # -o default: bash lists files
    spec = subprocess.run(
        ["bash", "--norc", "-c", f"source {COMPLETIONS / 'chatllm.bash'}; complete -p chatllm"],
        capture_output=True,
        text=True,
    )
    assert "-o default" in spec.stdout

    from chatllm.history.recording import record_run

    record_run(model="m", template="summarize", output="o", prompt="first")
    assert bash_complete("chatllm", "logs", "show", "") == ["1"]


def test_zsh_and_fish_protocols_answer() -> None:
    zsh = subprocess.run(
        ["chatllm"],
        capture_output=True,
        text=True,
        env=cli_env(**{COMPLETE_VARIABLE: "complete_zsh", "_TYPER_COMPLETE_ARGS": "chatllm translate --to f"}),
    )
    assert zsh.returncode == 0 and '"fr"' in zsh.stdout
    fish = subprocess.run(
        ["chatllm"],
        capture_output=True,
        text=True,
        env=cli_env(
            **{
                COMPLETE_VARIABLE: "complete_fish",
                "_TYPER_COMPLETE_FISH_ACTION": "get-args",
                "_TYPER_COMPLETE_ARGS": "chatllm tr",
            }
        ),
    )
    assert fish.returncode == 0 and "translate" in fish.stdout.split()


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completes_with_the_committed_script() -> None:
    result = subprocess.run(
        ["fish", "--no-config", "-c", f"source {COMPLETIONS / 'chatllm.fish'}; complete -C 'chatllm translate --to f'"],
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    assert "fr" in result.stdout.split()


@pytest.mark.parametrize(
    "shell, installed",
    [
        ("bash", ".bash_completions/chatllm.sh"),
        ("zsh", ".zfunc/_chatllm"),
        ("fish", ".config/fish/completions/chatllm.fish"),
    ],
)
def test_install_completion_installs_the_committed_script(shell: str, installed: str, tmp_path: Path) -> None:
    result = subprocess.run(
        ["chatllm", "--install-completion", shell],
        capture_output=True,
        text=True,
        env=cli_env(HOME=str(tmp_path), _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1"),
    )
    assert result.returncode == 0, result.stderr
    assert f"{shell} completion installed in" in result.stdout
    committed = (COMPLETIONS / SCRIPT_FILES[shell]).read_text().replace(NOTE + "\n", "")
    assert (tmp_path / installed).read_text().strip() == committed.strip()
    assert completion_script(shell) == (COMPLETIONS / SCRIPT_FILES[shell]).read_text()
