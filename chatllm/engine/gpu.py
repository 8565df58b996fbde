"""What llama.cpp was built with, which GPUs it sees, and how many layers of a
model fit on them (`--gpu-layers auto`).

Devices and their free memory come from ggml's backend registry (the same
numbers llama.cpp uses: CUDA, Metal, Vulkan, SYCL alike), read through ctypes
from the libraries llama-cpp-python ships; `nvidia-smi` is asked as well, so
`chatllm doctor` can say when a GPU is present but the build cannot use it.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from chatllm.engine.bindings import llama_bindings, llama_cpp_version
from chatllm.errors import UsageError
from chatllm.hub.gguf_info import read_gguf_info

# ggml_backend_dev_type: CPU, GPU (own memory), IGPU (host memory), ACCEL (BLAS, AMX), META
_DEVICE_KINDS = {0: "CPU", 1: "GPU", 2: "iGPU", 3: "accelerator", 4: "meta"}
# Left free on the GPU for llama.cpp's compute buffers and the driver.
COMPUTE_RESERVE_BYTES = 768 * 1024**2
RESERVE_FRACTION = 0.05


@dataclass(frozen=True)
class Device:
    """A device llama.cpp (or nvidia-smi) reports."""

    name: str  # "CUDA0", "Metal", "Vulkan0", "CPU", or the nvidia-smi name
    description: str  # "NVIDIA H100 80GB HBM3", "Apple M2 Pro", …
    kind: str  # "CPU", "GPU", "iGPU", "accelerator"
    free_bytes: int | None
    total_bytes: int | None

    @property
    def is_gpu(self) -> bool:
        return self.kind in ("GPU", "iGPU")


@dataclass(frozen=True)
class LlamaBuild:
    version: str  # llama-cpp-python's
    backends: tuple[str, ...]  # registered ggml backends, e.g. ("CUDA", "CPU")
    gpu_offload: bool  # llama_supports_gpu_offload()
    system_info: str  # llama_print_system_info(): CPU features and backend flags

    @property
    def label(self) -> str:
        """ "CUDA", "Metal", "Vulkan" …, or "CPU" for a CPU-only build."""
        accelerators = [b for b in self.backends if b not in ("CPU", "BLAS", "RPC")]
        return " + ".join(accelerators) if accelerators else "CPU"


@functools.lru_cache(maxsize=1)
def llama_build() -> LlamaBuild:
    """Facts about the installed llama-cpp-python (loads its libraries)."""
    llama_cpp = llama_bindings()

    backends: tuple[str, ...] = ()
    try:
        ggml, ggml_base = _ggml_libraries()
        ggml.ggml_backend_reg_count.restype = ctypes.c_size_t
        ggml.ggml_backend_reg_get.restype = ctypes.c_void_p
        ggml.ggml_backend_reg_get.argtypes = [ctypes.c_size_t]
        ggml_base.ggml_backend_reg_name.restype = ctypes.c_char_p
        ggml_base.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]
        backends = tuple(
            ggml_base.ggml_backend_reg_name(ggml.ggml_backend_reg_get(i)).decode()
            for i in range(ggml.ggml_backend_reg_count())
        )
    except (OSError, AttributeError, RuntimeError):
        pass  # an unusual build: the system info string still tells
    info = llama_cpp.llama_print_system_info()
    return LlamaBuild(
        version=llama_cpp_version(),
        backends=backends,
        gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
        system_info=(info.decode(errors="replace") if isinstance(info, bytes) else str(info)).strip(" |"),
    )


def llama_devices() -> list[Device]:
    """Every device ggml registered, with free/total memory where it tells."""
    llama_build()  # loads the libraries and registers the backends
    try:
        ggml, base = _ggml_libraries()
    except (OSError, RuntimeError):
        return []
    ggml.ggml_backend_dev_count.restype = ctypes.c_size_t
    ggml.ggml_backend_dev_get.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for function in (base.ggml_backend_dev_name, base.ggml_backend_dev_description):
        function.restype = ctypes.c_char_p
        function.argtypes = [ctypes.c_void_p]
    base.ggml_backend_dev_type.restype = ctypes.c_int
    base.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    size_pointer = ctypes.POINTER(ctypes.c_size_t)
    base.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, size_pointer, size_pointer]
    devices = []
    for index in range(ggml.ggml_backend_dev_count()):
        handle = ggml.ggml_backend_dev_get(index)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        base.ggml_backend_dev_memory(handle, ctypes.byref(free), ctypes.byref(total))
        devices.append(
            Device(
                name=(base.ggml_backend_dev_name(handle) or b"?").decode(errors="replace"),
                description=(base.ggml_backend_dev_description(handle) or b"").decode(errors="replace"),
                kind=_DEVICE_KINDS.get(base.ggml_backend_dev_type(handle), "other"),
                free_bytes=free.value or None,
                total_bytes=total.value or None,
            )
        )
    return devices


def nvidia_smi_gpus() -> list[Device]:
    """NVIDIA GPUs as nvidia-smi lists them; [] without nvidia-smi or a driver."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return []
    try:
        output = subprocess.run(
            [executable, "--query-gpu=name,memory.free,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for index, line in enumerate(output.strip().splitlines()):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            free, total = (_mib(p) for p in parts[1:])
            gpus.append(
                Device(name=f"nvidia{index}", description=parts[0], kind="GPU", free_bytes=free, total_bytes=total)
            )
    return gpus


def choose_gpu_layers(model_path: Path, n_ctx: int, requested: str | None) -> int:
    """Layers to offload, as llama.cpp's n_gpu_layers (-1 = all).

    A number in `requested` is used as given. None or "auto": 0 when llama.cpp
    cannot offload or sees no GPU; -1 when the whole model (weights and a
    `n_ctx` KV cache) fits in the GPUs' free memory, or when that memory is not
    reported; else the number of layers that fit."""
    if requested not in (None, "", "auto"):
        try:
            layers = int(str(requested))
        except ValueError:
            raise UsageError(f"--gpu-layers must be a number, -1 (all) or auto, not '{requested}'") from None
        if layers < -1:
            raise UsageError("--gpu-layers must be -1 (all), 0 (none) or a positive number")
        return layers
    if not llama_build().gpu_offload:
        return 0
    gpus = [d for d in llama_devices() if d.is_gpu]
    if not gpus:
        return 0
    if any(d.free_bytes is None for d in gpus):
        return -1
    return layers_that_fit(model_path, n_ctx, sum(d.free_bytes or 0 for d in gpus))


def layers_that_fit(model_path: Path, n_ctx: int, free_bytes: int) -> int:
    """-1 when everything fits in `free_bytes`, else how many layers do (>= 0).

    Estimate: the file's bytes spread evenly over its layers plus one more for
    the output head, an f16 KV cache of `n_ctx` tokens per layer, and a reserve
    for compute buffers."""
    info = read_gguf_info(model_path)
    if not info.block_count:
        return -1  # unknown layout: let llama.cpp try
    weights = _model_bytes(model_path, info.split_count)
    per_layer = weights / (info.block_count + 1) + kv_cache_bytes_per_layer(info, n_ctx)
    budget = free_bytes - COMPUTE_RESERVE_BYTES - RESERVE_FRACTION * free_bytes
    fitting = int(budget // per_layer) if budget > 0 else 0
    if fitting >= info.block_count + 1:
        return -1
    return max(0, min(fitting, info.block_count))


def kv_cache_bytes_per_layer(info, n_ctx: int) -> int:
    """K and V for `n_ctx` tokens of one layer, in f16 (llama.cpp's default)."""
    head_count = info.head_count or 1
    head_count_kv = info.head_count_kv or head_count
    embedding = info.embedding_length or 4096
    key_length = info.metadata.get(f"{info.architecture}.attention.key_length") or embedding // head_count
    value_length = info.metadata.get(f"{info.architecture}.attention.value_length") or key_length
    return int(n_ctx * head_count_kv * (key_length + value_length) * 2)


def _model_bytes(first_shard: Path, split_count: int) -> int:
    if split_count <= 1:
        return first_shard.stat().st_size
    stem = first_shard.name[: -len("-00001-of-00001.gguf")]
    return sum(
        first_shard.with_name(f"{stem}-{i:05d}-of-{split_count:05d}.gguf").stat().st_size
        for i in range(1, split_count + 1)
    )


def _ggml_libraries() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    """libggml (registry) and libggml-base (device calls), as llama_cpp loaded them."""
    bindings = llama_bindings()
    from llama_cpp._ctypes_extensions import load_shared_library

    folder = Path(str(bindings.__file__)).parent / "lib"
    return load_shared_library("ggml", folder), load_shared_library("ggml-base", folder)


def _mib(text: str) -> int | None:
    try:
        return int(float(text) * 1024**2)
    except ValueError:
        return None


@dataclass(frozen=True)
class SystemReport:
    """The hardware facts `chatllm doctor` prints."""

    build: LlamaBuild
    devices: tuple[Device, ...]  # as llama.cpp sees them
    nvidia_gpus: tuple[Device, ...]  # as nvidia-smi sees them (may be more)
    logical_cpus: int
    usable_cpus: int  # this process's CPU affinity

    @property
    def hint(self) -> str | None:
        """Advice when the hardware and the build disagree."""
        if self.nvidia_gpus and not self.build.gpu_offload:
            return (
                "an NVIDIA GPU is present but llama-cpp-python was built for the CPU only; reinstall it with "
                'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python'
            )
        return None


def system_report() -> SystemReport:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        usable = os.cpu_count() or 1
    return SystemReport(
        build=llama_build(),
        devices=tuple(llama_devices()),
        nvidia_gpus=tuple(nvidia_smi_gpus()),
        logical_cpus=os.cpu_count() or 1,
        usable_cpus=usable,
    )
