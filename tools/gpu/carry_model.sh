#!/usr/bin/env bash
# Carries the default model (SmolLM2-135M-Instruct, Q4_1 GGUF, 93 MB) to the GPU machine in
# parts, for the `smollm` part of tools/gpu/check.sh. A device call carries at most 64 MiB in
# all (the working tree plus the carried paths), and `.gpu` (tools/gpu/bundle.sh) already
# takes over half of that: the GGUF travels in parts over consecutive calls, one part in
# `.gpu/model/` per call, stashed there in /tmp by tools/gpu/model_parts.sh (it lasts while
# the machine stays warm: 30 s after a call) and joined and checked against its sha256 in
# the last call. The first and last calls carry .gpu with a small part; the middle ones
# carry only .gpu/model with a large part (the bundle stays on the warm machine).
#
# Usage (here, in the repository, after tools/gpu/bundle.sh):
#   tools/gpu/carry_model.sh            split the verified GGUF into parts sized so that the
#                                       tree plus `.gpu` plus one part stays under the limit,
#                                       put the gguf Python package into .gpu/py (export_hf.py
#                                       needs it there; the GPU machine has no internet),
#                                       stage part 1 and print the device calls to make
#   tools/gpu/carry_model.sh --part N   stage part N into .gpu/model/ (the others removed)
#   tools/gpu/carry_model.sh --clean    remove .gpu/model/ (carry .gpu without the model)
# Environment: TROUPE_CACHE (default ~/.cache/troupe; the model from tools/fetch_model.sh and
# its parts beside it), CARRY_LIMIT_MIB (64), CARRY_MARGIN_MIB (2: room left for the tree
# to grow between the split and the calls).
# Exit status: 0 staged, 1 something is missing or too large, 2 bad arguments.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cache="${TROUPE_CACHE:-$HOME/.cache/troupe}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
model="$cache/models/$name"
parts_dir="$cache/models/$name.parts"
gpu=.gpu
limit=$(( ${CARRY_LIMIT_MIB:-64} * 1048576 ))
margin=$(( ${CARRY_MARGIN_MIB:-2} * 1048576 ))
python="${PYTHON:-python3}"

die() { echo "carry_model: $*" >&2; exit 1; }
# The committed sha256 of the model (tools/fetch_model.sh holds the one copy).
model_sha256() { sed -n 's/^sha256="\([0-9a-f]\{64\}\)"$/\1/p' tools/fetch_model.sh; }
# Bytes of the working tree that every call sends (tracked and untracked-not-ignored files).
tree_bytes() { git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1; }
# Bytes of .gpu without its model/ folder.
bundle_bytes() {
  local all model_part=0
  all=$(du -sb "$gpu" | cut -f1)
  [ -d "$gpu/model" ] && model_part=$(du -sb "$gpu/model" | cut -f1)
  echo $(( all - model_part ))
}

# The gguf package (pure Python; it imports numpy and yaml, both transformers' own needs)
# unpacked into .gpu/py, at the version tools/requirements-test.txt pins.
stage_gguf_package() {
  local version wheels=$cache/wheels
  version=$(sed -n 's/^gguf==\(.*\)$/\1/p' tools/requirements-test.txt)
  [ -n "$version" ] || die "tools/requirements-test.txt pins no gguf version"
  [ -f "$gpu/py/gguf/__init__.py" ] && [ "$(cat "$gpu/py/gguf.version" 2>/dev/null)" = "$version" ] && return 0
  mkdir -p "$wheels"
  ls "$wheels"/gguf-"$version"-*.whl >/dev/null 2>&1 ||
    "$python" -m pip download --quiet --no-deps --dest "$wheels" "gguf==$version"
  rm -rf "$gpu/py" && mkdir -p "$gpu/py"
  "$python" - "$(ls "$wheels"/gguf-"$version"-*.whl | head -1)" "$gpu/py" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    z.extractall(out, [m for m in z.namelist() if m.startswith("gguf/")])
PY
  echo "$version" > "$gpu/py/gguf.version"
  echo "carry_model: gguf $version unpacked into $gpu/py ($(du -sh "$gpu/py" | cut -f1))"
}

# Splits the verified model into parts: the first and the last travel beside the tree and
# .gpu (the first call brings the bundle; the last runs the check, carrying .gpu again so it
# never depends on what stayed there), the middle ones beside the tree alone (their calls
# carry only .gpu/model: the bundle from the first call stays on the warm machine).
split_model() {
  local sha size with_bundle alone n i f left cut offset=0
  local -a sizes=()
  sha=$(model_sha256)
  [ -f "$model" ] || die "$model is missing: run tools/fetch_model.sh"
  echo "$sha  $model" | sha256sum --check --status || die "$model does not match its sha256 $sha"
  size=$(stat -c %s "$model")
  alone=$(( limit - margin - $(tree_bytes) ))
  with_bundle=$(( alone - $(bundle_bytes) ))
  (( with_bundle > 1048576 )) || die "no room for a part: tree + .gpu leave $(( with_bundle / 1024 )) KiB of the limit"
  left=$size
  while (( left > 0 )); do
    if (( ${#sizes[@]} == 0 )) || (( left <= with_bundle )); then cut=$(( left < with_bundle ? left : with_bundle ))
    else cut=$(( left - with_bundle < alone ? left - with_bundle : alone )); fi
    sizes+=("$cut")
    left=$(( left - cut ))
  done
  n=${#sizes[@]}
  rm -rf "$parts_dir" && mkdir -p "$parts_dir"
  for i in $(seq 1 "$n"); do
    dd if="$model" of="$parts_dir/part_$i" bs=1M iflag=skip_bytes,count_bytes status=none \
      skip="$offset" count="${sizes[$((i - 1))]}"
    offset=$(( offset + ${sizes[$((i - 1))]} ))
  done
  { echo "name $name"; echo "sha256 $sha"; echo "size $size"; echo "parts $n"
    for i in $(seq 1 "$n"); do
      f="$parts_dir/part_$i"
      echo "part $i part_$i $(stat -c %s "$f") $(sha256sum "$f" | cut -d' ' -f1)"
    done; } > "$parts_dir/manifest.txt"
  echo "carry_model: $name ($size bytes) in $n parts (${sizes[*]} bytes; room per call:" \
    "$with_bundle beside the tree and .gpu, $alone beside the tree alone)"
}

# Puts part N (and the manifest) into .gpu/model/, alone; checks the call's total size.
stage_part() {
  local n=$1 total parts
  [ -f "$parts_dir/manifest.txt" ] || die "no parts yet: run tools/gpu/carry_model.sh first"
  parts=$(awk '$1 == "parts" {print $2}' "$parts_dir/manifest.txt")
  [[ $n =~ ^[0-9]+$ ]] && (( n >= 1 && n <= parts )) || die "--part $n: the model has parts 1..$parts"
  rm -rf "$gpu/model" && mkdir -p "$gpu/model"
  cp "$parts_dir/manifest.txt" "$parts_dir/part_$n" "$gpu/model/"
  if (( n == 1 || n == parts )); then total=$(( $(tree_bytes) + $(du -sb "$gpu" | cut -f1) ))
  else total=$(( $(tree_bytes) + $(du -sb "$gpu/model" | cut -f1) )); fi
  echo "carry_model: staged part $n of $parts in $gpu/model; this call carries $total bytes" \
    "($(( total * 100 / limit ))% of the limit)"
  (( total <= limit )) || die "$total bytes exceed the $limit a call carries: re-split (tools/gpu/carry_model.sh)"
}

# The device calls, one per part: the first and the last carry .gpu, the middle ones .gpu/model.
print_plan() {
  local parts i
  parts=$(awk '$1 == "parts" {print $2}' "$parts_dir/manifest.txt")
  echo
  echo "Device calls, back to back (the machine keeps /tmp only while warm: 30 s after a call):"
  for i in $(seq 1 "$parts"); do
    (( i == 1 )) || echo "  here:   tools/gpu/carry_model.sh --part $i"
    if (( i == 1 )); then
      echo "  call $i: carry [\".gpu\"]  command: bash tools/gpu/model_parts.sh stash"
    elif (( i < parts )); then
      echo "  call $i: carry [\".gpu/model\"]  command: bash tools/gpu/model_parts.sh stash"
    else
      echo "  call $i: carry [\".gpu\"]  command: CHECK_PARTS=smollm bash tools/gpu/check.sh" \
        "(or plain bash tools/gpu/check.sh: every part)"
    fi
  done
  echo "  afterwards, here: tools/gpu/carry_model.sh --clean"
}

case "${1:-}" in
  "")
    [ -f "$gpu/bin.tar.gz" ] || [ -x "$gpu/bin/troupe_gpu" ] || die "$gpu/bin.tar.gz is missing: run tools/gpu/bundle.sh first"
    stage_gguf_package
    rm -rf "$gpu/model"
    split_model
    stage_part 1
    print_plan
    ;;
  --part)
    [ $# -eq 2 ] || { echo "usage: $0 [--part N | --clean]" >&2; exit 2; }
    stage_gguf_package
    stage_part "$2"
    ;;
  --clean) rm -rf "$gpu/model"; echo "carry_model: removed $gpu/model" ;;
  -h|--help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "${BASH_SOURCE[0]}" ;;
  *) echo "usage: $0 [--part N | --clean]" >&2; exit 2 ;;
esac
