#!/bin/sh
# build_fuzz.sh -- build (and optionally run) the sanitized runtime fault
# programs, which need their own compiler flags:
#   BUILD/faults/fuzz_api     libFuzzer + ASan + UBSan over the public API
#                             (falls back to a deterministic random driver
#                             when clang's libFuzzer is not usable)
#   BUILD/faults/asan_rt_oom  f_rt_oom.c under ASan + LeakSanitizer
# Usage: tests/faults/build_fuzz.sh [BUILD_DIR]   (run from the repository root)
# The library sources are compiled again with the sanitizers; the generated
# template embedding must exist (make lib).
set -eu
BUILD=${1:-${KILN_BUILD:-build}}
OUT=$BUILD/faults
OBJ=$BUILD/obj-asan
mkdir -p "$OUT" "$OBJ"
[ -f "$BUILD/gen/kiln_templates.c" ] || { echo "build_fuzz: run make lib first" >&2; exit 1; }
CLANG=${CLANG:-clang}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CF="-std=c11 -D_GNU_SOURCE -DKILN_BUILDING -Iinclude -I. -I$BUILD/gen -Itests -Itests/faults -g -O1 -w"
LIBS="-lsqlite3 -lxxhash -ldl -lpthread -lm"
SRCS="$(ls runtime/*.c dispatch/*.c cache/*.c) $BUILD/gen/kiln_templates.c tests/faults/util_rt.c tests/util_fakecu.c"

# Compile each source once, in parallel (2 jobs), with coverage for libFuzzer.
fuzzer=1
echo 'int LLVMFuzzerTestOneInput(const unsigned char*d,unsigned long n){(void)d;(void)n;return 0;}' \
    >"$OBJ/probe.c"
$CLANG -fsanitize=fuzzer "$OBJ/probe.c" -o "$OBJ/probe" 2>/dev/null || fuzzer=0
COV=""
[ $fuzzer = 1 ] && COV="-fsanitize=fuzzer-no-link"
objs=""
for s in $SRCS; do
    o=$OBJ/$(echo "$s" | tr '/' '_').o
    objs="$objs $o"
    if [ ! -f "$o" ] || [ "$s" -nt "$o" ]; then
        $CLANG $CF $SAN $COV -c -o "$o" "$s" &
        [ $(jobs -p | wc -l) -ge 2 ] && wait -n 2>/dev/null || true
    fi
done
wait
if [ $fuzzer = 1 ]; then
    $CLANG $CF $SAN -fsanitize=fuzzer -o "$OUT/fuzz_api" tests/faults/fuzz_api.c $objs $LIBS
else
    echo "build_fuzz: clang libFuzzer unusable; building the random driver" >&2
    $CLANG $CF $SAN -DRT_FUZZ_STANDALONE -o "$OUT/fuzz_api" tests/faults/fuzz_api.c \
        tests/faults/fuzz_main.c $objs $LIBS
fi
if [ -f tests/faults/f_rt_oom.c ]; then
    $CLANG $CF $SAN -o "$OUT/asan_rt_oom" tests/faults/f_rt_oom.c $objs -lcmocka $LIBS
fi
echo "build_fuzz: built $OUT/fuzz_api${fuzzer:+ (libFuzzer=$fuzzer)}"
