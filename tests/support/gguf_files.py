"""GGUF files made in a test: tiny valid ones with llama-style metadata, and
copies of a real model with its metadata rewritten.

Real files, written with the `gguf` package, so that metadata readers, the Hub
stand-in and llama.cpp see what they would see from a real model, without a
test depending on one being downloaded.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

CHAT_TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"

# general.file_type numbers (llama.cpp's llama_ftype)
FILE_TYPE = {"F16": 1, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17}


def write_tiny_gguf(
    path: Path, file_type: str, *, seed: int, elements: int = 128 * 1024, split: tuple[int, int] | None = None
) -> Path:
    """A valid GGUF with llama-style metadata and one float32 tensor of
    `elements` values (512 KB by default): real enough for metadata readers and
    big enough for downloads to take several chunks."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("Tiny Test Model")
    writer.add_license("mit")
    writer.add_context_length(2048)
    writer.add_block_count(4)
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_file_type(FILE_TYPE[file_type])
    writer.add_chat_template(CHAT_TEMPLATE)
    if split:
        writer.add_uint16("split.no", split[0] - 1)
        writer.add_uint16("split.count", split[1])
        writer.add_int32("split.tensors.count", split[1])
    data = np.random.default_rng(seed).standard_normal(elements).astype(np.float32)
    writer.add_tensor(f"blk.{seed}.weight", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def rewrite_gguf_metadata(source: Path, target: Path, *options: str) -> Path:
    """A copy of `source` at `target` with its metadata changed by the `gguf`
    package's gguf_new_metadata script (`options` are that script's, such as
    `--chat-template TEXT` or `--remove-metadata KEY`); the tensors are kept."""
    subprocess.run(
        [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(source), str(target), *options, "--force"],
        check=True,
        capture_output=True,
    )
    return target


def with_chat_template(source: Path, target: Path, template: str) -> Path:
    """A copy of the model `source` whose chat template is `template`."""
    return rewrite_gguf_metadata(source, target, "--chat-template", template)


def without_chat_template(source: Path, target: Path) -> Path:
    """A copy of the model `source` with no chat template, as a base model comes."""
    return rewrite_gguf_metadata(source, target, "--remove-metadata", "tokenizer.chat_template")
