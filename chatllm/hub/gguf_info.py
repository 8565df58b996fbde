"""GGUF metadata without loading weights.

A small header reader instead of `gguf.GGUFReader`: that one builds numpy
views for every element of every array (the tokenizer's 50k-150k strings), which
takes 1.5 s for a 135M model with a 49k vocabulary; this one skips arrays it
does not need and reads the same facts in a few milliseconds. The format:
https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from chatllm.errors import ModelError

GGUF_MAGIC = b"GGUF"

# general.file_type values (llama.cpp's enum llama_ftype); the names match the
# quantization names in file names.
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}

# GGUF value types: struct format of the fixed-size ones.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# Arrays longer than this are skipped (tokenizer vocabularies); metadata we show is short.
_MAX_ARRAY_KEPT = 64
_SHARD_SUFFIX = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


@dataclass(frozen=True)
class GGUFInfo:
    """Facts about a model file. Fields are None when the file does not say."""

    path: Path
    architecture: str | None
    name: str | None
    license: str | None
    context_length: int | None
    block_count: int | None  # transformer layers
    embedding_length: int | None
    head_count: int | None
    head_count_kv: int | None
    file_type: str | None  # quantization, e.g. "Q4_K_M"
    parameter_count: int  # summed over all tensors of all shards
    tensor_count: int
    split_count: int
    chat_template: str | None
    metadata: dict[str, Any]  # every key with a scalar or short-array value


def read_gguf_info(path: Path) -> GGUFInfo:
    """Read the header of `path` (and of its other shards for a split model).
    Raises ModelError for a file that is not a readable GGUF."""
    metadata, parameters, tensors = _read_header(path)
    split_count = int(metadata.get("split.count") or 1)
    if split_count > 1:
        for other in _other_shards(path, split_count):
            _, shard_parameters, shard_tensors = _read_header(other)
            parameters += shard_parameters
            tensors += shard_tensors
    arch = metadata.get("general.architecture")

    def arch_int(key: str) -> int | None:
        value = metadata.get(f"{arch}.{key}")
        if isinstance(value, list):  # per-layer values (some hybrid models): report the largest
            value = max(value) if value else None
        return int(value) if isinstance(value, (int, float)) else None

    file_type = metadata.get("general.file_type")
    return GGUFInfo(
        path=path,
        architecture=arch,
        name=metadata.get("general.name"),
        license=metadata.get("general.license") or metadata.get("general.license.name"),
        context_length=arch_int("context_length"),
        block_count=arch_int("block_count"),
        embedding_length=arch_int("embedding_length"),
        head_count=arch_int("attention.head_count"),
        head_count_kv=arch_int("attention.head_count_kv"),
        file_type=FILE_TYPES.get(file_type, f"type {file_type}") if isinstance(file_type, int) else None,
        parameter_count=parameters,
        tensor_count=tensors,
        split_count=split_count,
        chat_template=metadata.get("tokenizer.chat_template"),
        metadata=metadata,
    )


def format_parameter_count(count: int) -> str:
    """135M, 1.5B, 7.6B: how model sizes are usually written."""
    if count >= 1_000_000_000:
        return f"{count / 1e9:.1f}B"
    if count >= 1_000_000:
        return f"{count / 1e6:.0f}M"
    return f"{count / 1e3:.0f}K" if count >= 1000 else str(count)


def _other_shards(path: Path, count: int) -> list[Path]:
    match = _SHARD_SUFFIX.search(path.name)
    if match is None:
        raise ModelError(f"{path} says it is split into {count} files but its name has no -0000N-of-0000M suffix")
    stem = path.name[: match.start()]
    shards = [path.with_name(f"{stem}-{index:05d}-of-{count:05d}.gguf") for index in range(1, count + 1)]
    missing = [s.name for s in shards if not s.exists()]
    if missing:
        raise ModelError(f"split model {path.name} is missing {', '.join(missing)}")
    return [s for s in shards if s.name != path.name]


def _read_header(path: Path) -> tuple[dict[str, Any], int, int]:
    """(metadata, parameter count, tensor count) of one GGUF file."""
    try:
        with path.open("rb") as handle:
            return _parse(handle, path)
    except OSError as error:
        raise ModelError(f"cannot read {path}: {error.strerror or error}") from None
    except (struct.error, UnicodeDecodeError, MemoryError, ValueError):
        raise ModelError(f"{path} is truncated or not a valid GGUF file") from None


def _parse(handle: BinaryIO, path: Path) -> tuple[dict[str, Any], int, int]:
    reader = _Reader(handle)
    if handle.read(4) != GGUF_MAGIC:
        raise ModelError(f"{path} is not a GGUF file")
    version = reader.scalar("<I")
    if version < 2:
        raise ModelError(f"{path} uses GGUF version {version}; re-download a current conversion")
    tensor_count = reader.scalar("<Q")
    kv_count = reader.scalar("<Q")
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = reader.string()
        value_type = reader.scalar("<I")
        value = reader.value(value_type)
        if value is not _SKIPPED:
            metadata[key] = value
    parameters = 0
    for _ in range(tensor_count):
        reader.string()  # tensor name
        n_dims = reader.scalar("<I")
        elements = 1
        for _ in range(n_dims):
            elements *= reader.scalar("<Q")
        reader.scalar("<I")  # ggml type
        reader.scalar("<Q")  # data offset
        parameters += elements
    return metadata, parameters, tensor_count


_SKIPPED = object()
_LENGTH = struct.Struct("<Q")


class _Reader:
    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle

    def scalar(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        data = self.handle.read(size)
        return struct.unpack(fmt, data)[0]

    def string(self) -> str:
        length = self.scalar("<Q")
        if length > 1 << 30:
            raise ValueError("string too long")
        return self.handle.read(length).decode("utf-8", errors="replace")

    def value(self, value_type: int) -> Any:
        if value_type in _SCALARS:
            return self.scalar(_SCALARS[value_type])
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            item_type = self.scalar("<I")
            count = self.scalar("<Q")
            if count > _MAX_ARRAY_KEPT:
                self._skip_array(item_type, count)
                return _SKIPPED
            return [self.value(item_type) for _ in range(count)]
        raise ValueError(f"unknown GGUF value type {value_type}")

    def _skip_array(self, item_type: int, count: int) -> None:
        if item_type in _SCALARS:
            self.handle.seek(struct.calcsize(_SCALARS[item_type]) * count, 1)
        elif item_type == _STRING:
            # Each string has its own length; reading the lengths is the only way past
            # them (100k strings in a vocabulary, so no per-item method calls here).
            read, seek, length = self.handle.read, self.handle.seek, _LENGTH.unpack
            for _ in range(count):
                seek(length(read(8))[0], 1)
        else:
            for _ in range(count):
                self.value(item_type)
