#!/usr/bin/env bash
# Sourced by the device scripts: unpacks the bundle's programs (tools/gpu/bundle.sh packs
# .gpu/bin into .gpu/bin.tar.gz so that a call stays under its 64 MiB) unless this warm
# machine already holds that very archive unpacked (its checksum in .gpu/bin/.from).
if [ -f .gpu/bin.tar.gz ]; then
  sum=$(md5sum < .gpu/bin.tar.gz)
  if [ "$(cat .gpu/bin/.from 2>/dev/null)" != "$sum" ]; then
    rm -rf .gpu/bin
    tar -C .gpu -xzf .gpu/bin.tar.gz || { echo "unpack: .gpu/bin.tar.gz did not unpack" >&2; exit 1; }
    echo "$sum" > .gpu/bin/.from
  fi
fi
[ -d .gpu/bin ] || { echo "unpack: no .gpu/bin and no .gpu/bin.tar.gz: run tools/gpu/bundle.sh here and carry .gpu" >&2; exit 1; }
