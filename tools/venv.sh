#!/usr/bin/env bash
# Create or update the troupe Python virtual environment.
#
# Usage: tools/venv.sh [--reference]
#   venv location: ${TROUPE_VENV:-<repo>/.venv}
#   python:        ${TROUPE_PYTHON:-python3}  (needs Python >= 3.9)
#   --reference    also install tools/requirements-reference.txt
#                  (builds llama-cpp-python from source: 26 min measured on 2 shared cores)
#
# Idempotent: a requirements file that was installed unchanged is skipped
# (a stamp file with its hash lives inside the venv). pip caches the wheel it
# built for llama-cpp-python, so a fresh venv on the same machine takes seconds;
# to rebuild with other CMAKE_ARGS, run with PIP_NO_CACHE_DIR=1.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"
venv="${TROUPE_VENV:-${repo}/.venv}"
python="${TROUPE_PYTHON:-python3}"
reference=0

for arg in "$@"; do
    case "${arg}" in
        --reference) reference=1 ;;
        -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "venv.sh: unknown argument '${arg}' (expected --reference)" >&2; exit 2 ;;
    esac
done

if ! command -v "${python}" >/dev/null 2>&1; then
    echo "venv.sh: python interpreter '${python}' not found (set TROUPE_PYTHON)" >&2
    exit 1
fi

if [[ ! -x "${venv}/bin/python" ]]; then
    echo "venv.sh: creating ${venv}"
    "${python}" -m venv "${venv}"
    "${venv}/bin/python" -m pip install --quiet --upgrade pip
fi

# Install one requirements file unless its content hash matches the stamp.
install_requirements() {
    local req="$1" stamp="${venv}/.troupe-$(basename "$1").sha256"
    # The reference file includes the test file, so hash both.
    local hash
    hash="$(cat "${req}" "${here}/requirements-test.txt" | sha256sum | cut -d' ' -f1)"
    if [[ -f "${stamp}" && "$(cat "${stamp}")" == "${hash}" ]]; then
        echo "venv.sh: $(basename "${req}") already installed in ${venv}"
        return 0
    fi
    echo "venv.sh: installing $(basename "${req}") into ${venv}"
    "${venv}/bin/python" -m pip install --requirement "${req}"
    echo "${hash}" > "${stamp}"
}

install_requirements "${here}/requirements-test.txt"

if [[ "${reference}" == 1 ]]; then
    # Portable CPU build of llama.cpp: no -march=native, but AVX2/FMA/F16C,
    # no GPU backends, no curl, no llama.cpp tests/examples/server.
    export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF}"
    export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
    # Never take a prebuilt wheel for llama-cpp-python: build it with the flags above.
    export PIP_NO_BINARY="${PIP_NO_BINARY:-llama-cpp-python}"
    install_requirements "${here}/requirements-reference.txt"
fi

echo "venv.sh: ready: ${venv} (activate with: source ${venv}/bin/activate)"
