# Verdicts of tools/gpu/check.sh (sourced; kept apart so that they can be checked without
# a GPU: tools/gpu/check_verdicts_test.sh feeds them captured outputs).
# A test binary built from tests/main.cpp exits 0 (passed), 77 (nothing failed, a case
# skipped: tests/skip.h) or anything else (failed).

# The verdict of one case from its exit status: pass, skip or FAIL(<status>).
case_verdict() {
  case "$1" in
    0) echo pass ;;
    77) echo skip ;;
    *) echo "FAIL($1)" ;;
  esac
}

# The summary line of a tests.txt (lines "<verdict>\t<ms> ms\t<name>").
tests_summary() {
  awk -F'\t' '$1 == "pass" { p++ } $1 == "skip" { s++ } $1 ~ /^FAIL/ { f++ }
    END { printf "CUDA tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$1"
}

# 0 when every case in a tests.txt passed, 1 when any failed or none ran at all, 77 when
# none failed but one skipped.
tests_status() {
  awk -F'\t' '$1 == "pass" { p++ } $1 == "skip" { s++ } $1 ~ /^FAIL/ { f++ }
    END { exit (f || !(p + s)) ? 1 : s ? 77 : 0 }' "$1"
}

# The worse of two statuses: 1 (failed) over 77 (skipped) over 0 (passed).
worse() {
  if [ "$1" -eq 1 ] || [ "$2" -eq 1 ]; then echo 1
  elif [ "$1" -eq 77 ] || [ "$2" -eq 77 ]; then echo 77
  else echo 0; fi
}
