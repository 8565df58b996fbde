#!/usr/bin/env bash
# Find or build llama.cpp's `llama-bench`, `llama-batched-bench` and `llama-completion`
# (and optionally `llama-server`) from the
# llama.cpp source that ships inside the llama-cpp-python sdist of the INSTALLED version,
# so chatllm and llama-bench run the same llama.cpp code.
#
# Usage: benchmarks/build_llama_bench.sh [--with-server] [--cuda] [--shared] [--force]
# --shared links llama-bench against shared libllama/libggml (as llama-cpp-python
# ships them), so it can also run on the installed package's own libraries
# (LD_LIBRARY_PATH=.../site-packages/llama_cpp/lib): the same machine code chatllm runs.
# Prints the path of llama-bench on its last stdout line. Build output goes to
# benchmarks/.build/ (git-ignored); nothing from llama.cpp is ever committed.
#
# Environment: PYTHON (default: python from PATH, i.e. the activated venv),
#              JOBS (default: nproc), LLAMA_CPP_PYTHON_VERSION (default: installed version).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build_root="$here/.build"
with_server=0
cuda=0
shared=0
force=0
for arg in "$@"; do
  case "$arg" in
    --with-server) with_server=1 ;;
    --cuda) cuda=1 ;;
    --shared) shared=1 ;;
    --force) force=1 ;;
    -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done

py="${PYTHON:-python}"
jobs="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
variant="cpu"; [[ $cuda == 1 ]] && variant="cuda"
[[ $shared == 1 ]] && variant="$variant-shared"
bin_dir="$build_root/llama.cpp-$variant/bin"

# 1. Already available?
if [[ $force == 0 ]]; then
  if [[ $cuda == 0 && $shared == 0 ]] && command -v llama-bench >/dev/null 2>&1; then
    command -v llama-bench; exit 0
  fi
  if [[ -x "$bin_dir/llama-bench" && -x "$bin_dir/llama-completion" && -x "$bin_dir/llama-batched-bench" && ( $with_server == 0 || -x "$bin_dir/llama-server" ) ]]; then
    echo "$bin_dir/llama-bench"; exit 0
  fi
fi

# 2. Fetch the sdist of the installed llama-cpp-python.
version="${LLAMA_CPP_PYTHON_VERSION:-$("$py" -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))')}"
src_root="$build_root/src"
src_dir="$src_root/llama_cpp_python-$version"
if [[ ! -d "$src_dir/vendor/llama.cpp" ]]; then
  mkdir -p "$src_root"
  echo "downloading llama-cpp-python==$version sdist ..." >&2
  "$py" -m pip download --quiet --no-deps --no-binary :all: \
    "llama-cpp-python==$version" -d "$src_root" >&2
  tarball="$(ls "$src_root"/llama_cpp_python-"$version".tar.gz 2>/dev/null || ls "$src_root"/llama-cpp-python-"$version".tar.gz)"
  tar -xzf "$tarball" -C "$src_root"
  [[ -d "$src_dir" ]] || src_dir="$src_root/llama-cpp-python-$version"
fi
llama_src="$src_dir/vendor/llama.cpp"
[[ -f "$llama_src/CMakeLists.txt" ]] || { echo "no vendor/llama.cpp in $src_dir" >&2; exit 1; }

# 3. Configure and build only the targets we need.
cmake_dir="$build_root/llama.cpp-$variant"
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
flags=(-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF
       -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER="$with_server"
       -DBUILD_SHARED_LIBS="$( [[ $shared == 1 ]] && echo ON || echo OFF )"
       -DCMAKE_RUNTIME_OUTPUT_DIRECTORY="$cmake_dir/bin" -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$cmake_dir/bin")
[[ $cuda == 1 ]] && flags+=(-DGGML_CUDA=ON)
echo "configuring llama.cpp ($variant) in $cmake_dir ..." >&2
cmake -S "$llama_src" -B "$cmake_dir" "${generator[@]}" "${flags[@]}" >&2
# llama-completion: llama.cpp's own one-shot CLI, the reference for time to first token.
# llama-batched-bench: the ceiling for several sequences decoded in one batch (serve --parallel).
targets=(llama-bench llama-completion llama-batched-bench)
[[ $with_server == 1 ]] && targets+=(llama-server)
echo "building ${targets[*]} with $jobs jobs ..." >&2
cmake --build "$cmake_dir" --config Release -j "$jobs" --target "${targets[@]}" >&2
[[ -x "$bin_dir/llama-bench" ]] || bin_dir="$(dirname "$(find "$cmake_dir" -name llama-bench -type f -perm -u+x | head -1)")"
echo "$bin_dir/llama-bench"
