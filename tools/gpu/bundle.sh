#!/usr/bin/env bash
# Builds what tools/gpu/check.sh and tools/gpu/kill_test.sh run (CUDA on, in build-gpu/) and bundles it into .gpu/ with
# the libraries it needs (tools/gpu/bundle_libs.sh) and the tokenizer the random models use.
# Run here, then carry .gpu (ignored by git through .gitignore).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
build="${TROUPE_GPU_BUILD:-build-gpu}"
[ -f "$build/build.ninja" ] || cmake -S . -B "$build" -G Ninja -DTROUPE_CUDA=ON -DCMAKE_BUILD_TYPE=Release
ninja -C "$build" -j"${TROUPE_JOBS:-2}" troupe troupe_gpu troupe_cuda_tests
tools/gpu/bundle_libs.sh .gpu "$build/bin/troupe" "$build/bin/troupe_gpu" "$build/bin/troupe_cuda_tests"
mkdir -p .gpu/hf
tok="${TROUPE_CACHE:-$HOME/.cache/troupe}/models/SmolLM2-135M-Instruct-hf/tokenizer.json"
[ -f "$tok" ] && cp "$tok" .gpu/hf/tokenizer.json
# The programs travel packed (~40 MiB stripped, ~17 MiB gzipped): with the working tree they
# would pass the 64 MiB a device call carries. Each device script unpacks them first
# (tools/gpu/unpack.sh).
rm -f .gpu/bin.tar.gz
tar -C .gpu -czf .gpu/bin.tar.gz bin && rm -rf .gpu/bin
du -sh .gpu
