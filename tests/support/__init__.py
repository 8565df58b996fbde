"""What tests share, kept apart from the tests themselves so that no test module
imports another (or conftest.py) for a helper.

* `cli`: the one way to run the real `chatllm` command in a subprocess
  (`run_chatllm`, `start_chatllm`, `chatllm_command`, `cli_env`).
* `gguf_files`: tiny real GGUF files written in a test, and copies of a GGUF
  with its metadata rewritten (another chat template, or none).
* `hub_server`: a Hugging Face Hub stand-in on 127.0.0.1, with switchable faults.
* `openai_servers`: a scripted OpenAI-compatible stand-in, and real servers
  started as subprocesses.
* `hub_fixtures` (pytest plugin): hub_env, hub_server, tiny_repo_files and the
  test repos' names.
* `server_fixtures` (pytest plugin): served (the server core in-process),
  chatllm_serve and llama_server (real servers on the embedded model).

The two plugins are loaded for every test module by `pytest_plugins` in
tests/conftest.py, so tests just name their fixtures.
"""
