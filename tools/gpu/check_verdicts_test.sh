#!/usr/bin/env bash
# Checks tools/gpu/check.sh's verdicts (tools/gpu/verdicts.sh) without a GPU: captured
# per-case exit statuses go through case_verdict, tests_summary and tests_status, and a
# skip must be counted apart, never as a pass. Run by ctest (label "wiring").
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/verdicts.sh"
fails=0
expect() {  # expect WHAT WANT GOT
  if [ "$2" = "$3" ]; then echo "ok: $1"; else echo "FAILED: $1: wanted '$2', got '$3'" >&2; fails=$((fails + 1)); fi
}
sample() {  # sample FILE STATUS... : a tests.txt with one case per exit status
  local file="$1" i=0
  shift
  : > "$file"
  for rc in "$@"; do
    i=$((i + 1))
    printf "%s\t%6d ms\t%s\n" "$(case_verdict "$rc")" 12 "case $i" >> "$file"
  done
}
status_of() { tests_status "$1"; echo $?; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

expect "exit 0 is a pass" pass "$(case_verdict 0)"
expect "exit 77 is a skip" skip "$(case_verdict 77)"
expect "exit 4 (four failed assertions under a plain Catch2 main) is a failure" "FAIL(4)" "$(case_verdict 4)"
expect "exit 124 (timeout) is a failure" "FAIL(124)" "$(case_verdict 124)"

sample "$tmp/all_pass.txt" 0 0 0
expect "three passes: summary" "CUDA tests: 3 passed, 0 failed, 0 skipped" "$(tests_summary "$tmp/all_pass.txt")"
expect "three passes: status 0" 0 "$(status_of "$tmp/all_pass.txt")"

sample "$tmp/skips.txt" 0 77 77
expect "a pass and two skips: skips counted apart" "CUDA tests: 1 passed, 0 failed, 2 skipped" \
  "$(tests_summary "$tmp/skips.txt")"
expect "a pass and two skips: status 77, not 0" 77 "$(status_of "$tmp/skips.txt")"

sample "$tmp/mixed.txt" 0 77 1 4
expect "pass, skip and two failures: summary" "CUDA tests: 1 passed, 2 failed, 1 skipped" \
  "$(tests_summary "$tmp/mixed.txt")"
expect "pass, skip and two failures: status 1" 1 "$(status_of "$tmp/mixed.txt")"

sample "$tmp/none.txt"
expect "no case at all: status 1" 1 "$(status_of "$tmp/none.txt")"

expect "worse of skip and pass is skip" 77 "$(worse 0 77)"
expect "worse of skip and failure is failure" 1 "$(worse 77 1)"
expect "worse of two passes is pass" 0 "$(worse 0 0)"
[ "$fails" -eq 0 ] && echo "verdicts: all checks passed" && exit 0
echo "verdicts: $fails check(s) failed" >&2
exit 1
