#!/usr/bin/env bash
# Runs every hidden test case (Catch2 tag "[.]": the cases no default run and no ctest
# entry includes, because they take minutes each or need special hardware) one at a time,
# then prints a table of case / result / seconds and a closing line
# "N passed, N failed, N skipped". Exit status 0 only when none failed.
#
#   tools/run_hidden_tests.sh [--build DIR] [--logs DIR] [--timeout S] [--list] [FILTER]
#
#   --build DIR    build folder holding bin/troupe_tests (default: $TROUPE_BUILD or ./build)
#   --logs DIR     where each case's full output goes (default: BUILD/hidden-tests)
#   --timeout S    a case running longer is stopped and counted as failed (default 3600)
#   --list         print the hidden cases and exit
#   FILTER         run only the cases whose name contains FILTER (grep -F)
#
# A case is "skipped", never "passed", when it could not run here: it exits with the
# suite's skip code (SKIP_RETURN_CODE in tests/CMakeLists.txt), prints a SKIPPED marker
# (e.g. the [cuda] cases without a GPU, the [netns] case when network namespaces cannot be
# made: it needs root), or is not compiled into this build (the CUDA benchmark without
# CUDA). A case "passed" only when the binary exits 0 and Catch2 reports all passed.
# Needs a build (tools/setup.sh) and the default model. docs/reliability.md has a
# recorded run.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${TROUPE_BUILD:-$root/build}"
logs="" timeout_s=3600 list=0 filter=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --logs) logs="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    --list) list=1; shift ;;
    -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "run_hidden_tests.sh: unknown option '$1'" >&2; exit 2 ;;
    *) filter="$1"; shift ;;
  esac
done
bin="$build/bin/troupe_tests"
[ -x "$bin" ] || { echo "run_hidden_tests.sh: no $bin (build first: tools/setup.sh)" >&2; exit 2; }
logs="${logs:-$build/hidden-tests}"
mkdir -p "$logs"

# The suite's skip exit code, if it declares one.
skip_rc=$(sed -n 's/.*SKIP_RETURN_CODE[[:space:]]\{1,\}\([0-9]\{1,\}\).*/\1/p' "$root/tests/CMakeLists.txt" | head -n 1)

# Hidden cases compiled only into some builds: name <TAB> why it is missing otherwise.
conditional=$'CUDA kernel timings at Llama-3-8B shapes\tnot in this build (CUDA kernels off)'

# Every hidden case but the [wiring] ones (tests/test_wiring.cpp: cases built to fail or
# skip, whose exit statuses ctest checks).
mapfile -t cases < <("$bin" --list-test-names-only "[.]~[wiring]" | sed -e 's/^[[:space:]]*//' -e '/^$/d')
[ ${#cases[@]} -gt 0 ] || { echo "run_hidden_tests.sh: $bin lists no hidden case" >&2; exit 2; }
missing=()
while IFS=$'\t' read -r name why; do
  [ -n "$name" ] || continue
  printf '%s\n' "${cases[@]}" | grep -qxF -- "$name" || missing+=("$name"$'\t'"$why")
done <<<"$conditional"

if [ "$list" = 1 ]; then
  printf '%s\n' "${cases[@]}"
  for m in "${missing[@]}"; do printf '%s (%s)\n' "${m%%$'\t'*}" "${m#*$'\t'}"; done
  exit 0
fi

# A test spec naming exactly one case: Catch2 separates specs at ',' and reads '[' as a
# tag, '*' as a wildcard, '~' and '"' specially; a backslash escapes them.
spec_of() { printf '%s' "$1" | sed -e 's/[],[\\*~"]/\\&/g'; }

# The first line of a log that says why its case skipped (tests/skip.h prints
# "TROUPE-SKIPPED: <case>: <why>").
skip_note() {
  { grep -m1 'TROUPE-SKIPPED' "$1" || grep -m1 -iE 'skipped' "$1"; } | sed 's/^[[:space:]]*//' | cut -c1-120
}

rows=() passed=0 failed=0 skipped=0 n=0
add_row() {  # name result seconds note
  rows+=("$1"$'\t'"$2"$'\t'"$3"$'\t'"$4")
  case "$2" in passed) passed=$((passed + 1)) ;; failed) failed=$((failed + 1)) ;; *) skipped=$((skipped + 1)) ;; esac
}

for name in "${cases[@]}"; do
  [ -z "$filter" ] || printf '%s' "$name" | grep -qF -- "$filter" || continue
  n=$((n + 1))
  log="$logs/$(printf '%02d' "$n")-$(printf '%s' "$name" | tr -c 'A-Za-z0-9' '-' | tr -s '-' | cut -c1-60).log"
  printf '== %s\n' "$name" >&2
  start=$(date +%s.%N)
  timeout --signal=TERM --kill-after=30 "$timeout_s" "$bin" "$(spec_of "$name")" --durations yes >"$log" 2>&1
  rc=$?
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
  summary=$(grep -E '^(All tests passed|test cases:)' "$log" | tail -n 1)
  if grep -q 'No test cases matched' "$log"; then
    add_row "$name" failed "$secs" "the test spec matched no case (script bug)"
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    add_row "$name" failed "$secs" "stopped after the ${timeout_s} s limit"
  elif [ -n "$skip_rc" ] && [ "$rc" = "$skip_rc" ] && ! grep -qE 'failed|FAILED:' <<<"$summary"; then
    add_row "$name" skipped "$secs" "$(skip_note "$log")"
  elif [ "$rc" = 0 ] && grep -qiE 'SKIPPED|scenario skipped|skipped:' "$log"; then
    add_row "$name" skipped "$secs" "$(skip_note "$log")"
  elif [ "$rc" = 0 ] && grep -q '^All tests passed' <<<"$summary"; then
    add_row "$name" passed "$secs" "$(sed 's/^All tests passed //' <<<"$summary")"
  else
    add_row "$name" failed "$secs" "exit $rc; ${summary:-no Catch2 summary}"
  fi
  printf '   %s in %s s (log: %s)\n' "$(cut -f2 <<<"${rows[-1]}")" "$secs" "$log" >&2
done
for m in "${missing[@]}"; do
  name="${m%%$'\t'*}"
  [ -z "$filter" ] || printf '%s' "$name" | grep -qF -- "$filter" || continue
  add_row "$name" skipped 0 "${m#*$'\t'}"
done

echo
echo "| case | result | seconds | note |"
echo "| --- | --- | --- | --- |"
for r in "${rows[@]}"; do
  IFS=$'\t' read -r name result secs note <<<"$r"
  note=$(tr -s ' ' <<<"${note//|//}")  # a Catch2 summary's '|' would split the table's cell
  echo "| $name | $result | $secs | $note |"
done
echo
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
