#!/usr/bin/env bash
# Packs programs built here, with the shared libraries they load, into one folder that a
# run on another machine (the GPU machine) can carry and use without installing anything:
#
#   tools/gpu/bundle_libs.sh OUT_DIR PROGRAM...
#
# OUT_DIR/bin gets the programs; OUT_DIR/lib every shared library they load (per `ldd`)
# except those the GPU machine has its own, newer copies of:
#   - glibc and the C/C++ runtime (libc, libm, libpthread, libdl, librt, ld-linux,
#     libstdc++, libgcc_s): a program built against an older glibc runs on a newer one;
#   - CUDA and NCCL (libcuda, libcudart, libcublas*, libnccl, libnvidia*, ...): they must
#     match the machine's driver, so the machine's own are used.
# OUT_DIR/lib/ucx gets UCX's transport modules (UCX looks for them in a ucx/ folder next
# to libucs), and OUT_DIR/lib their libraries too. There, run with
#   export LD_LIBRARY_PATH=$PWD/OUT_DIR/lib:/usr/local/cuda/lib64:$LD_LIBRARY_PATH
# The script fails when `ldd` cannot resolve a library here, or when a bundled program or
# module does not resolve every library against OUT_DIR/lib plus this machine's system
# libraries; it prints what it bundled and the bundle's size (a device call carries at most
# 64 MiB in all).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 OUT_DIR PROGRAM..." >&2
  exit 2
fi
out=$1
shift
# Left out: glibc, the C/C++ runtime, CUDA and NCCL (matched on the library's soname).
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libmvec|libpthread|libdl\.so|librt\.so|libresolv|libutil\.so|libanl|libstdc\+\+|libgcc_s|libcuda\.so|libcudart|libcublas|libcurand|libcusparse|libcusolver|libcufft|libcudnn|libnccl|libnvidia|libnvJitLink|libnvrtc)'
ucx_modules=/usr/lib/x86_64-linux-gnu/ucx

mkdir -p "$out/bin" "$out/lib"

# Copies every library `ldd FILE` names (but the skipped ones) into $out/lib, under its
# soname, following symlinks so that only plain files travel.
copy_libraries() {
  local file=$1 line name path
  local listing
  listing=$(ldd "$file")
  if grep -q "not found" <<<"$listing"; then
    echo "bundle_libs: $file needs a library this machine does not have:" >&2
    grep "not found" <<<"$listing" >&2
    exit 1
  fi
  while read -r name path; do
    [[ $name =~ $skip ]] && continue
    [ -e "$out/lib/$name" ] || cp -L "$path" "$out/lib/$name"
  done < <(awk '/=> \// {print $1, $3}' <<<"$listing")
}

for prog in "$@"; do
  [ -x "$prog" ] || { echo "bundle_libs: $prog is not an executable file" >&2; exit 1; }
  cp -L "$prog" "$out/bin/"
  # Symbol tables off the copies (the device call carries at most 64 MiB; ~6 MiB less).
  strip --strip-unneeded "$out/bin/$(basename "$prog")"
  copy_libraries "$prog"
done

# UCX's transport modules (shared-memory cma, InfiniBand, RDMA CM): only when UCX travels.
if ls "$out"/lib/libucs.so* >/dev/null 2>&1 && [ -d "$ucx_modules" ]; then
  mkdir -p "$out/lib/ucx"
  for m in "$ucx_modules"/*.so*; do
    cp -L "$m" "$out/lib/ucx/$(basename "$m")"
  done
  for m in "$ucx_modules"/*.so.*.*; do copy_libraries "$m"; done
fi

# What travels, and a check that it is complete: with the bundle first on the search path,
# every library a program or module needs resolves, and from the bundle unless it is one
# of those left out.
echo "bundled libraries:"
(cd "$out/lib" && ls -1 | grep -v '^ucx$' | sed 's/^/  /')
[ -d "$out/lib/ucx" ] && echo "UCX modules: $(cd "$out/lib/ucx" && ls -1 | grep '\.so\.[0-9]*$' | tr '\n' ' ')"
lib_dir=$(cd "$out/lib" && pwd)
for f in "$out"/bin/* "$out"/lib/ucx/*.so.*.*; do
  [ -e "$f" ] || continue
  while read -r name path; do
    [[ $name =~ $skip ]] && continue
    if [[ $path == not ]]; then
      echo "bundle_libs: $f needs $name, found nowhere" >&2
      exit 1
    elif [[ $path != "$lib_dir"/* ]]; then
      echo "bundle_libs: $f loads $name from $path, not from the bundle" >&2
      exit 1
    fi
  done < <(LD_LIBRARY_PATH="$lib_dir" ldd "$f" | awk '/=>/ {print $1, $3}')
done
du -sh "$out" | awk '{print "bundle: " $1 " in " $2 " (a device call carries at most 64 MiB in all)"}'
