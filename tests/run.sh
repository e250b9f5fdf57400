#!/bin/sh
# Runs every test program given and every tests/test_*.sh, then prints one
# summary line "N passed, N failed".  Exit status 1 if any failed.
# GPU tests skip (and say so) on machines without a GPU.
set -u
BUILD=${KILN_BUILD:-build}
export KILN_BUILD=$BUILD
pass=0
fail=0
failed=""
for t in "$@" tests/test_*.sh; do
    [ -e "$t" ] || continue
    name=$(basename "$t")
    echo "=== $name"
    case "$t" in
    *.sh) sh "$t" ;;
    *) "$t" ;;
    esac
    rc=$?
    if [ $rc -eq 0 ]; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        failed="$failed $name"
        echo "=== $name FAILED (exit $rc)"
    fi
done
echo
[ -n "$failed" ] && echo "failed:$failed"
echo "tests: $pass passed, $fail failed"
[ $fail -eq 0 ]
