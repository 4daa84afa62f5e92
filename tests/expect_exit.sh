#!/bin/sh
# expect_exit.sh CODE COMMAND [ARG...]: runs COMMAND and passes (exit 0) only when it exits
# with CODE. ctest uses it to check the test binary's own exit statuses (tests/main.cpp).
want="$1"
shift
"$@"
got=$?
if [ "$got" -eq "$want" ]; then
  echo "expect_exit: exit status $got, as expected"
  exit 0
fi
echo "expect_exit: expected exit status $want, got $got" >&2
exit 1
