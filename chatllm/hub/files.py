"""Hub model references and the GGUF files of a repo, as plain data (no I/O).

A reference names a repo and, optionally, a quantization or a file:

  org/repo                 the default quantization (Q4_K_M, else the closest one)
  org/repo:Q5_K_M          a quantization (case-insensitive)
  org/repo:file.gguf       a file in the repo
  org/repo/sub/file.gguf   the same, written as a path
  hf:<any of the above>    explicit Hub prefix; hf.co/ and huggingface.co/ work too

A repo's files are grouped into `ModelVariant`s: one GGUF file, or the shards of
a split file (`name-00001-of-00003.gguf`), which are always used together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chatllm.errors import ModelError

DEFAULT_QUANT = "Q4_K_M"

# When the default quantization is missing, the closest one in quality and size
# wins: 4-bit first, then 5/6/8-bit, then smaller ones, full precision last.
QUANT_PREFERENCE = (
    "Q4_K_M",
    "Q4_K_S",
    "IQ4_XS",
    "Q4_0",
    "IQ4_NL",
    "Q4_1",
    "Q4_K_L",
    "Q4_K_XL",
    "Q5_K_M",
    "Q5_K_S",
    "Q5_0",
    "Q5_1",
    "Q5_K_L",
    "Q5_K_XL",
    "Q6_K",
    "Q6_K_L",
    "Q6_K_XL",
    "Q8_0",
    "Q8_K_XL",
    "Q3_K_L",
    "Q3_K_M",
    "Q3_K_XL",
    "IQ3_M",
    "Q3_K_S",
    "IQ3_XS",
    "IQ3_XXS",
    "Q2_K_L",
    "Q2_K",
    "Q2_K_XL",
    "IQ2_M",
    "IQ2_S",
    "IQ2_XS",
    "IQ2_XXS",
    "IQ1_M",
    "IQ1_S",
    "MXFP4",
    "BF16",
    "F16",
    "F32",
)

# Quantization names as they appear in file names: Q4_K_M, q4_k_m, IQ4_XS, UD-Q4_K_XL, BF16.
_QUANT_PATTERN = re.compile(
    r"(?<![A-Za-z0-9])(?:UD-)?("
    r"I?Q[1-8]_K(?:_(?:XXS|XS|XL|S|M|L))?"
    r"|IQ[1-4]_(?:XXS|XS|NL|S|M)"
    r"|Q[4-8]_[01]|TQ[12]_0|MXFP4(?:_MOE)?|BF16|F16|FP16|F32"
    r")(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_SHARD_PATTERN = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HUB_PREFIXES = ("hf:", "hf.co/", "huggingface.co/", "https://huggingface.co/")


@dataclass(frozen=True)
class HubReference:
    """A parsed Hub reference. At most one of `quant` and `filename` is set."""

    repo: str  # "org/name"
    quant: str | None = None  # upper-case, e.g. "Q4_K_M"
    filename: str | None = None  # path inside the repo, e.g. "sub/model-Q8_0.gguf"

    def __str__(self) -> str:
        if self.filename:
            return f"{self.repo}/{self.filename}"
        return f"{self.repo}:{self.quant}" if self.quant else self.repo


@dataclass(frozen=True)
class RepoFile:
    """One file of a repo as the Hub lists it."""

    path: str
    size: int | None = None
    sha256: str | None = None  # LFS files only


@dataclass(frozen=True)
class ModelVariant:
    """A loadable model in a repo: one GGUF file, or all shards of a split one."""

    files: tuple[RepoFile, ...]  # shards in order; the first is what llama.cpp opens
    quant: str | None

    @property
    def first(self) -> RepoFile:
        return self.files[0]

    @property
    def size(self) -> int | None:
        sizes = [f.size for f in self.files]
        return sum(size for size in sizes if size is not None) if None not in sizes else None


def parse_hub_reference(text: str) -> HubReference:
    """Parse the non-alias forms in the module docstring; ModelError if `text`
    is not one of them."""
    body = text.strip()
    for prefix in _HUB_PREFIXES:
        if body.lower().startswith(prefix):
            body = body[len(prefix) :]
            break
    body, colon, suffix = body.partition(":")
    parts = body.strip("/").split("/")
    if len(parts) < 2 or not all(_REPO_PART.match(p) for p in parts[:2]):
        raise ModelError(
            f"'{text}' is not a model file, an alias or a Hub repo; "
            "use org/repo[:QUANT], a path to a .gguf file, or see `chatllm models catalog`"
        )
    repo = "/".join(parts[:2])
    in_repo_path = "/".join(parts[2:])
    if in_repo_path and colon:
        raise ModelError(f"'{text}': give either a file path or ':QUANT', not both")
    if in_repo_path:
        if not in_repo_path.lower().endswith(".gguf"):
            raise ModelError(f"'{text}': the file inside the repo must be a .gguf file")
        return HubReference(repo=repo, filename=in_repo_path)
    if colon:
        if not suffix:
            raise ModelError(f"'{text}': nothing after ':'; use org/repo:QUANT, e.g. {repo}:{DEFAULT_QUANT}")
        if suffix.lower().endswith(".gguf"):
            return HubReference(repo=repo, filename=suffix)
        return HubReference(repo=repo, quant=normalize_quant(suffix))
    return HubReference(repo=repo)


def normalize_quant(text: str) -> str:
    """`q4_k_m` → `Q4_K_M`; `fp16` → `F16`."""
    quant = text.strip().upper().replace("-", "_")
    return "F16" if quant == "FP16" else quant


def quant_of(path: str) -> str | None:
    """The quantization named in a file path (the last one wins, so a folder
    name like `Q8_0/` is overridden by the file's own), or None."""
    matches = _QUANT_PATTERN.findall(path)
    return normalize_quant(matches[-1]) if matches else None


def shard_of(path: str) -> tuple[int, int] | None:
    """(index, count) for `name-00002-of-00003.gguf`, else None."""
    match = _SHARD_PATTERN.search(path)
    return (int(match.group(1)), int(match.group(2))) if match else None


def is_model_file(path: str) -> bool:
    """GGUF files that are models on their own (not vision projectors or LoRA adapters)."""
    name = path.rsplit("/", 1)[-1].lower()
    return name.endswith(".gguf") and not name.startswith(("mmproj", "lora")) and "-mmproj" not in name


def group_variants(files: list[RepoFile]) -> list[ModelVariant]:
    """Group a repo's GGUF files into variants, sorted by path. Incomplete split
    sets (a shard missing) are left out: they could not be loaded."""
    singles: list[ModelVariant] = []
    split_sets: dict[str, dict[int, RepoFile]] = {}
    counts: dict[str, int] = {}
    for repo_file in files:
        if not is_model_file(repo_file.path):
            continue
        shard = shard_of(repo_file.path)
        if shard is None:
            singles.append(ModelVariant(files=(repo_file,), quant=quant_of(repo_file.path)))
            continue
        stem = _SHARD_PATTERN.sub("", repo_file.path)
        split_sets.setdefault(stem, {})[shard[0]] = repo_file
        counts[stem] = shard[1]
    for stem, shards in split_sets.items():
        if sorted(shards) == list(range(1, counts[stem] + 1)):
            ordered = tuple(shards[i] for i in sorted(shards))
            singles.append(ModelVariant(files=ordered, quant=quant_of(stem)))
    return sorted(singles, key=lambda v: v.first.path)


def choose_variant(variants: list[ModelVariant], reference: HubReference) -> ModelVariant:
    """The variant `reference` asks for. Raises ModelError naming what exists
    when the repo has no GGUF model, or not the asked quantization or file."""
    if not variants:
        raise ModelError(
            f"{reference.repo} has no GGUF model files; chatllm runs GGUF models only (look for a '-GGUF' repo)"
        )
    if reference.filename:
        for variant in variants:
            if reference.filename in (f.path for f in variant.files) or variant.first.path.endswith(
                "/" + reference.filename
            ):
                return variant
        names = ", ".join(v.first.path for v in variants)
        raise ModelError(f"{reference.repo} has no file '{reference.filename}'; its GGUF files are: {names}")
    if reference.quant:
        matching = [v for v in variants if v.quant == reference.quant]
        if not matching:
            raise ModelError(
                f"{reference.repo} has no {reference.quant} file; available quantizations: {', '.join(available_quants(variants))}"
            )
        return matching[0]
    return preferred_variant(variants)


def preferred_variant(variants: list[ModelVariant]) -> ModelVariant:
    """Q4_K_M if present, else the first quantization in QUANT_PREFERENCE, else
    the smallest file."""
    rank = {quant: position for position, quant in enumerate(QUANT_PREFERENCE)}
    unknown = len(rank)

    def key(variant: ModelVariant) -> tuple[int, int, str]:
        return (rank.get(variant.quant or "", unknown), variant.size or 0, variant.first.path)

    return min(variants, key=key)


def available_quants(variants: list[ModelVariant]) -> list[str]:
    """Distinct quantizations, in preference order (unrecognized names last)."""
    rank = {quant: position for position, quant in enumerate(QUANT_PREFERENCE)}
    quants = {v.quant or v.first.path.rsplit("/", 1)[-1] for v in variants}
    return sorted(quants, key=lambda q: (rank.get(q, len(rank)), q))
