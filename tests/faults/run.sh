#!/bin/sh
# Runs each fault program under a watchdog (a hang is a failure), then prints
# "N passed, N failed".  Arguments: [--long] PROGRAM...
set -u
LONG=""
if [ "${1:-}" = "--long" ]; then LONG=--long; shift; fi
DEADLINE=${KILN_FAULT_DEADLINE:-300}
pass=0
fail=0
failed=""
for t in "$@"; do
    name=$(basename "$t")
    echo "=== $name $LONG"
    timeout -k 5 "$DEADLINE" "$t" $LONG
    rc=$?
    if [ $rc -eq 0 ]; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        failed="$failed $name"
        [ $rc -eq 124 ] && echo "=== $name HUNG past ${DEADLINE}s (watchdog)"
        echo "=== $name FAILED (exit $rc)"
    fi
done
echo
[ -n "$failed" ] && echo "failed:$failed"
echo "faults: $pass passed, $fail failed"
[ $fail -eq 0 ]
