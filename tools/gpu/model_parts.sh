#!/usr/bin/env bash
# The GPU machine's side of tools/gpu/carry_model.sh: the default model's GGUF arrives in
# parts, one in `.gpu/model/` per device call (with manifest.txt: name, sha256, size and
# each part's size and sha256). This script keeps them in $MODEL_STASH (default
# /tmp/troupe-model, which lasts while the machine stays warm) and joins them.
#
# Usage (on the GPU machine, from the repository root):
#   bash tools/gpu/model_parts.sh stash    keep the carried part(s); print which parts are
#                                          still missing
#   bash tools/gpu/model_parts.sh join     stash, then join every part and check the whole
#                                          file's sha256; prints the GGUF's path (stdout's
#                                          only line; messages go to stderr)
#   bash tools/gpu/model_parts.sh status   which parts are there and which are missing
# Exit status: 0 done; 77 (join, status) parts missing: nothing to run yet, never a pass;
# 1 a part or the joined file does not match its sha256, or stash found no part carried;
# 2 bad arguments.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
carried=.gpu/model
stash="${MODEL_STASH:-/tmp/troupe-model}"

say() { echo "model_parts: $*" >&2; }
field() { awk -v k="$1" '$1 == k {print $2}' "$2"; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# Copies the carried manifest and parts into the stash (a new manifest empties it first);
# each part is checked against the manifest. Prints how many parts it kept.
stash_carried() {
  local kept=0 i file size sha
  [ -f "$carried/manifest.txt" ] || { echo 0; return 0; }
  mkdir -p "$stash"
  if [ -f "$stash/manifest.txt" ] && ! cmp -s "$carried/manifest.txt" "$stash/manifest.txt"; then
    say "a new split (manifest changed): the parts stashed before are dropped"
    rm -f "$stash"/*
  fi
  cp "$carried/manifest.txt" "$stash/manifest.txt"
  while read -r _ i file size sha; do
    [ -f "$carried/$file" ] || continue
    if [ "$(stat -c %s "$carried/$file")" != "$size" ] || [ "$(sha_of "$carried/$file")" != "$sha" ]; then
      say "part $i ($file) does not match its size or sha256 in the manifest"
      exit 1
    fi
    cp "$carried/$file" "$stash/$file.tmp" && mv "$stash/$file.tmp" "$stash/$file"
    say "stashed part $i ($size bytes) in $stash"
    kept=$((kept + 1))
  done < <(awk '$1 == "part"' "$carried/manifest.txt")
  echo "$kept"
}

# Prints the numbers of the parts not in the stash (empty when all are there).
missing_parts() {
  awk '$1 == "part" {print $2, $3}' "$stash/manifest.txt" | while read -r i file; do
    [ -f "$stash/$file" ] || printf '%s ' "$i"
  done
}

# 0 when every part is stashed, 77 when the manifest or a part is missing (says which).
report() {
  local missing n
  if [ ! -f "$stash/manifest.txt" ]; then
    say "no model parts in $stash: run tools/gpu/carry_model.sh here and carry .gpu"
    return 77
  fi
  n=$(field parts "$stash/manifest.txt")
  missing=$(missing_parts)
  if [ -n "$missing" ]; then
    say "$(field name "$stash/manifest.txt"): parts still missing: ${missing% } (of $n);" \
      "carry each (tools/gpu/carry_model.sh --part N) while this machine is warm"
    return 77
  fi
  say "$(field name "$stash/manifest.txt"): all $n parts are here"
}

# Joins the parts into $stash/<name>, checks the sha256 and prints the path.
join_parts() {
  local name sha out file
  report || return $?
  name=$(field name "$stash/manifest.txt")
  sha=$(field sha256 "$stash/manifest.txt")
  out="$stash/$name"
  if [ ! -f "$out" ] || [ "$(sha_of "$out")" != "$sha" ]; then
    : > "$out.tmp"
    for file in $(awk '$1 == "part" {print $3}' "$stash/manifest.txt"); do cat "$stash/$file" >> "$out.tmp"; done
    if [ "$(sha_of "$out.tmp")" != "$sha" ]; then
      say "the joined $name does not match its sha256 $sha"
      rm -f "$out.tmp"
      return 1
    fi
    mv "$out.tmp" "$out"
  fi
  say "$out: joined, sha256 $sha verified"
  echo "$out"
}

case "${1:-}" in
  stash)
    kept=$(stash_carried)
    if [ "$kept" -eq 0 ]; then
      say "no model part carried in $carried (tools/gpu/carry_model.sh --part N here, carry .gpu)"
      exit 1
    fi
    report || [ $? -eq 77 ]
    ;;
  join) stash_carried > /dev/null; join_parts ;;
  status) report ;;
  *) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac
