"""chatllm: local large language models in your shell.

Importing this package is cheap: heavy modules (llama_cpp, huggingface_hub,
prompt_toolkit) are imported only by the functions that need them.
"""

__version__ = "0.1.0"
