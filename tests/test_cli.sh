#!/bin/sh
# test_cli.sh -- the kiln command.  Exact output where it is deterministic
# (usage errors, help first lines, canonical keys, exit statuses); real NVRTC
# compiles (sm_80, d64, three keys) for prewarm / ls / show / stats / verify /
# export / clear.
#
#   KILN_BUILD=build sh tests/test_cli.sh        (KILN=path overrides the binary)
#
# Prints one line per check and "N passed, N failed"; exits 1 on a failure.
# Compiling needs NVRTC; without it those checks are skipped and counted.

KILN_BUILD=${KILN_BUILD:-build}
KILN=${KILN:-$KILN_BUILD/kiln}

pass=0
fail=0
skip=0

if [ ! -x "$KILN" ]; then
    echo "test_cli: no kiln binary at $KILN (set KILN_BUILD)"
    echo "0 passed, 1 failed"
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kiln-cli.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'rm -rf "$tmp"; exit 130' INT TERM

# Keep the user's environment out of it.
unset KILN_CACHE_RO KILN_LOG XDG_CACHE_HOME
KILN_CACHE_DIR=$tmp/default-cache
export KILN_CACHE_DIR
cache=$tmp/cache
K="$KILN --cache-dir $cache"

have_python=0
command -v python3 >/dev/null 2>&1 && have_python=1

ok() {
    pass=$((pass + 1))
    printf 'ok   %s\n' "$1"
}
bad() {
    fail=$((fail + 1))
    printf 'FAIL %s\n' "$1"
    shift
    for line in "$@"; do printf '     %s\n' "$line"; done
}
skipped() {
    skip=$((skip + 1))
    printf 'skip %s\n' "$1"
}

# run CMD...: $rc, stdout in $out, stderr in $err (stdin from /dev/null).
run() {
    "$@" </dev/null >"$tmp/out" 2>"$tmp/err"
    rc=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
}

check_rc() { # name want
    if [ "$rc" = "$2" ]; then ok "$1"; else bad "$1" "exit $rc, want $2" "stdout: $out" "stderr: $err"; fi
}
check_eq() { # name got want
    if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "got:  $2" "want: $3"; fi
}
check_has() { # name text needle
    case $2 in
    *"$3"*) ok "$1" ;;
    *) bad "$1" "missing: $3" "in: $2" ;;
    esac
}
check_lacks() { # name text needle
    case $2 in
    *"$3"*) bad "$1" "unexpected: $3" "in: $2" ;;
    *) ok "$1" ;;
    esac
}
# check_json name file [python expression over d, must be true]
check_json() {
    if [ $have_python = 0 ]; then
        skipped "$1 (no python3)"
        return
    fi
    if python3 -m json.tool "$2" >/dev/null 2>"$tmp/jerr"; then
        if [ -n "$3" ]; then
            if python3 -c "import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if ($3) else 1)" "$2" 2>"$tmp/jerr"; then
                ok "$1"
            else
                bad "$1" "false: $3" "$(head -c 400 "$2")" "$(cat "$tmp/jerr")"
            fi
        else
            ok "$1"
        fi
    else
        bad "$1" "invalid JSON: $(cat "$tmp/jerr")" "$(head -c 400 "$2")"
    fi
}
first_line() { printf '%s\n' "$1" | sed -n 1p; }

# ------------------------------------------------------------ usage, help
run $KILN
check_rc "no verb exits 2" 2
check_eq "no verb prints usage on stderr" "$(first_line "$err")" \
    "usage: kiln [--cache-dir DIR] [--no-cache] [-v] VERB [ARGS...]"
check_eq "no verb prints nothing on stdout" "$out" ""

run $KILN --help
check_rc "--help exits 0" 0
check_eq "--help first line" "$(first_line "$out")" \
    "usage: kiln [--cache-dir DIR] [--no-cache] [-v] VERB [ARGS...]"
for v in info prewarm ls show key stats verify clear evict export; do
    check_has "--help lists $v" "$out" "
  $v "
done
main_help=$out
run $KILN help
check_eq "'kiln help' is --help" "$out" "$main_help"

run $KILN --version
check_rc "--version exits 0" 0
case $out in
"kiln "[0-9]*.[0-9]*.[0-9]*) ok "--version prints 'kiln X.Y.Z'" ;;
*) bad "--version prints 'kiln X.Y.Z'" "got: $out" ;;
esac

run $KILN frobnicate
check_rc "unknown verb exits 2" 2
check_eq "unknown verb message" "$(first_line "$err")" "kiln: unknown verb 'frobnicate'"
check_has "unknown verb shows usage" "$err" "usage: kiln "

run $KILN --frob ls
check_rc "unknown global option exits 2" 2
check_eq "unknown global option message" "$(first_line "$err")" "kiln: unknown option '--frob'"

run $KILN --cache-dir
check_rc "--cache-dir without a value exits 2" 2

help_line() { # verb expected-first-line
    run $KILN "$1" --help
    check_rc "$1 --help exits 0" 0
    check_eq "$1 --help first line" "$(first_line "$out")" "$2"
    h=$out
    run $KILN help "$1"
    check_eq "kiln help $1 = $1 --help" "$out" "$h"
    run $KILN "$1" -h
    check_eq "$1 -h = $1 --help" "$out" "$h"
}
help_line info "usage: kiln info [--json]"
help_line evict "usage: kiln evict --max-bytes N[K|M|G]"
run $KILN evict
check_rc "evict without --max-bytes exits 2" 2
run $KILN evict --max-bytes 12Q
check_rc "evict with a bad size exits 2" 2
check_has "evict names the bad size" "$err" "--max-bytes '12Q'"
help_line prewarm "usage: kiln prewarm [--arch ARCH] [-j N] [--file SPEC] [--quiet] [-n] KEY..."
help_line ls "usage: kiln ls [--json] [PATTERN]"
help_line show "usage: kiln show [--arch ARCH] [--json] KEY"
help_line key "usage: kiln key [--arch ARCH] [--explain] KEY"
help_line stats "usage: kiln stats [--json]"
help_line verify "usage: kiln verify [--drop] [--json]"
help_line clear "usage: kiln clear [--yes] [PATTERN]"
help_line export "usage: kiln export [--arch ARCH] KEY FILE"

run $KILN help frobnicate
check_rc "help of an unknown verb exits 2" 2

run $KILN ls --frob
check_rc "unknown verb option exits 2" 2
check_eq "unknown verb option message" "$err" "kiln: ls: unknown option '--frob'
Try 'kiln ls --help'."

run $KILN key
check_rc "key without KEY exits 2" 2
check_eq "key without KEY message" "$(first_line "$err")" "kiln: key: missing KEY"

run $KILN key a b
check_rc "key with two KEYs exits 2" 2
check_eq "key with two KEYs message" "$(first_line "$err")" "kiln: key: unexpected argument 'b'"

run $KILN key --arch
check_rc "option without value exits 2" 2
check_eq "option without value message" "$(first_line "$err")" "kiln: key: option '--arch' needs a value"

run $KILN prewarm
check_rc "prewarm without keys exits 2" 2
check_eq "prewarm without keys message" "$(first_line "$err")" "kiln: prewarm: no KEY given (and no --file)"

run $KILN prewarm -j 0 hstu_fwd/sm_80/bf16/d64/none
check_rc "prewarm -j 0 exits 2" 2
check_eq "prewarm -j 0 message" "$(first_line "$err")" "kiln: prewarm: -j needs a number from 1 to 1024, not '0'"

run $KILN prewarm --workers fibers hstu_fwd/sm_80/bf16/d64/none
check_rc "prewarm --workers fibers exits 2" 2

run $KILN export hstu_fwd/sm_80/bf16/d64/none
check_rc "export without FILE exits 2" 2
check_eq "export without FILE message" "$(first_line "$err")" "kiln: export: missing FILE"

run $KILN clear --yes extra args
check_rc "clear with two patterns exits 2" 2

run $K clear
check_rc "clear without --yes, stdin not a terminal, exits 2" 2
check_eq "clear without --yes message" "$(first_line "$err")" \
    "kiln: clear: refusing to delete without --yes (standard input is not a terminal)"

# ------------------------------------------------------------ bad keys
run $KILN key hstu_fwd/sm_90a/bf17/d128/causal
check_rc "bad dtype exits 2" 2
check_eq "bad dtype message" "$err" \
    "kiln: bad key 'hstu_fwd/sm_90a/bf17/d128/causal': dtype 'bf17' is not one of fp16, bf16, e4m3"

run $KILN key hstu_fwd/sm_90a/bf16/d100/causal
check_rc "bad head_dim exits 2" 2
check_has "bad head_dim names the key" "$err" "kiln: bad key 'hstu_fwd/sm_90a/bf16/d100/causal': "
check_has "bad head_dim names the field" "$err" "head_dim"
check_has "bad head_dim names the value" "$err" "100"

run $KILN key hstu_fwd/sm_90a/bf16/dx/causal
check_rc "malformed head_dim exits 2" 2
check_has "malformed head_dim names field and value" "$err" "head_dim 'dx'"

run $KILN key attn/sm_90a/bf16/d128/causal
check_rc "bad family exits 2" 2
check_has "bad family names field and value" "$err" "family 'attn'"

run $KILN key hstu_fwd/sm_9x/bf16/d128/causal
check_rc "bad arch exits 2" 2
check_has "bad arch names field and value" "$err" "arch 'sm_9x'"

run $KILN key hstu_fwd/sm_90a/bf16/d128/causal+sideways
check_rc "bad mask exits 2" 2
check_has "bad mask names field and value" "$err" "mask 'sideways'"

run $KILN key hstu_fwd/sm_90a/bf16/d128/target
check_rc "target without causal exits 2" 2
check_has "target without causal says why" "$err" "target needs causal"

run $KILN key hstu_fwd/sm_90a/bf16/d128/causal/rab/persist
check_rc "persist with rab exits 2" 2
check_has "persist with rab names field and why" "$err" "persist: keys with rab"

run $KILN key hstu_fwd/bf16/d128/causal
check_rc "key without arch exits 2" 2
check_has "key without arch says so" "$err" "arch missing"

run $KILN prewarm --arch sm_80 hstu_fwd/sm_80/bf16/d64/none hstu_fwd/sm_90a/bf17/d128/causal
check_rc "prewarm with one bad key exits 2" 2
check_eq "prewarm bad key message" "$(first_line "$err")" \
    "kiln: bad key 'hstu_fwd/sm_90a/bf17/d128/causal': dtype 'bf17' is not one of fp16, bf16, e4m3"
check_lacks "prewarm with a bad key compiles nothing" "$err" "ok hstu_fwd"

run $KILN prewarm -n 'hstu_fwd/sm_80/*/d48/*'
check_rc "pattern matching nothing exits 2" 2
check_has "pattern matching nothing says so" "$err" "matches no valid key"

# ------------------------------------------------------------ kiln key
run $KILN key hstu_fwd/sm_90a/bf16/d128/causal+target/rab
check_rc "key exits 0" 0
check_eq "key canonical form" "$out" "hstu_fwd/sm_90a/bf16/d128/causal+target/rab"
run $KILN key hstu_fwd/sm_90a/bf16/d128/target+causal/rab
check_eq "key sorts mask flags" "$out" "hstu_fwd/sm_90a/bf16/d128/causal+target/rab"
run $KILN key hstu_fwd/sm_90a/bf16/d128/causal/norab
check_eq "key drops norab" "$out" "hstu_fwd/sm_90a/bf16/d128/causal"
run $KILN key hstu_fwd/sm_90a/bf16/d128/delta_q
check_eq "key spells deltaq canonically" "$out" "hstu_fwd/sm_90a/bf16/d128/deltaq"
run $KILN key --arch sm_80 hstu_fwd/sm_90a/fp16/d64/none
check_eq "key --arch replaces the arch" "$out" "hstu_fwd/sm_80/fp16/d64/none"
run $KILN key --arch=sm_86 hstu_fwd/fp16/d64/none
check_eq "key --arch= fills a missing arch" "$out" "hstu_fwd/sm_86/fp16/d64/none"
run $KILN key hstu_fwd/sm_90a/bf16/d128/causal+target/rab
c1=$out
run $KILN key "$c1"
check_eq "key round trip (canonical is a fixed point)" "$out" "$c1"
for k in hstu_fwd/sm_80/bf16/d32/none hstu_fwd/sm_86/fp16/d256/causal+local/rab \
         hstu_fwd/sm_89/bf16/d64/causal+context+target hstu_fwd/sm_90a/fp16/d128/local+deltaq \
         hstu_fwd/sm_90a/bf16/d128/causal+target/persist; do
    run $KILN key "$k"
    c=$out
    run $KILN key "$c"
    if [ "$rc" = 0 ] && [ "$out" = "$c" ]; then ok "round trip $k"; else bad "round trip $k" "$c -> $out ($err)"; fi
done

run $KILN key --explain hstu_fwd/sm_90a/bf16/d128/causal+target/rab
check_rc "key --explain exits 0" 0
check_has "key --explain names the key" "$out" "hstu_fwd/sm_90a/bf16/d128/causal+target/rab"
check_has "key --explain shows the block_m field" "$out" "block_m 128"
check_has "key --explain shows the hash" "$out" "hash"
run $KILN key --explain hstu_fwd/sm_90a/bf16/d64/causal/persist
check_has "key --explain shows every tagged field" "$out" "i impl    1 (wgmma)"
check_has "key --explain shows persist" "$out" "p persist 1"

# ------------------------------------------------------------ prewarm -n, --file
run $KILN prewarm -n 'hstu_fwd/sm_90a/bf16/d64/causal*'
check_has "prewarm -n expands both grids of the Hopper forward" "$out" "hstu_fwd/sm_90a/bf16/d64/causal
hstu_fwd/sm_90a/bf16/d64/causal/rab
hstu_fwd/sm_90a/bf16/d64/causal/persist
hstu_fwd/sm_90a/bf16/d64/causal+local"

run $KILN prewarm -n --arch sm_80 'hstu_fwd/sm_90a/*/d64/causal'
check_rc "prewarm -n pattern exits 0" 0
check_eq "prewarm -n expands the pattern (arch replaced)" "$out" "hstu_fwd/sm_80/fp16/d64/causal
hstu_fwd/sm_80/bf16/d64/causal
hstu_fwd/sm_80/e4m3-bf16/d64/causal
hstu_fwd/sm_80/e4m3-fp16/d64/causal"

cat >"$tmp/spec" <<'EOF'
# kernels for the test
hstu_fwd/sm_80/bf16/d64/causal   # a trailing comment

   hstu_fwd/sm_80/bf16/d64/causal
hstu_fwd/sm_80/*/d64/none/rab
EOF
run $KILN prewarm -n --file "$tmp/spec" hstu_fwd/sm_80/bf16/d64/causal
check_rc "prewarm -n --file exits 0" 0
check_eq "prewarm --file: comments, blanks and duplicates dropped" "$out" "hstu_fwd/sm_80/bf16/d64/causal
hstu_fwd/sm_80/fp16/d64/none/rab
hstu_fwd/sm_80/bf16/d64/none/rab
hstu_fwd/sm_80/e4m3-bf16/d64/none/rab
hstu_fwd/sm_80/e4m3-fp16/d64/none/rab"

out=$(printf 'hstu_fwd/sm_90a/bf16/d64/none\n' | $KILN prewarm -n --arch sm_86 --file - 2>&1)
check_eq "prewarm --file - reads stdin" "$out" "hstu_fwd/sm_86/bf16/d64/none"

printf 'hstu_fwd/sm_80/bf16/d64/none\nhstu_fwd/sm_80/bf16/d65/none\n' >"$tmp/badspec"
run $KILN prewarm -n --file "$tmp/badspec"
check_rc "bad key in a spec file exits 2" 2
check_has "bad key in a spec file names file and line" "$err" "$tmp/badspec:2"

run $KILN prewarm -n --file "$tmp/does-not-exist"
check_rc "missing spec file exits 2" 2

# ------------------------------------------------------------ info, empty cache
run $K info
check_rc "info exits 0" 0
check_has "info shows the kiln version" "$(first_line "$out")" "kiln:"
check_has "info shows nvrtc" "$out" "nvrtc:"
check_has "info shows the cache" "$out" "cache:"
run $K info --json
check_rc "info --json exits 0" 0
printf '%s\n' "$out" >"$tmp/info.json"
check_json "info --json is valid JSON" "$tmp/info.json" \
    "isinstance(d['devices'], list) and d['device_count'] >= 0 and 'nvrtc_version' in d"
nvrtc=$(sed -n 's/^nvrtc: *//p' "$tmp/out" 2>/dev/null)
run $K info
case $out in
*"nvrtc:      not found"*) have_nvrtc=0 ;;
*) have_nvrtc=1 ;;
esac

run $K ls
check_rc "ls of an empty cache exits 0" 0
check_eq "ls of an empty cache prints nothing" "$out" ""
run $K ls --json
check_eq "ls --json of an empty cache" "$out" "[]"
run $K stats --json
printf '%s\n' "$out" >"$tmp/stats0.json"
check_json "stats --json (empty) is valid" "$tmp/stats0.json" "d['entries'] == 0"

run $K show hstu_fwd/sm_80/bf16/d64/causal
check_rc "show of an uncached key exits 1" 1
check_eq "show of an uncached key message" "$err" "kiln: show: 'hstu_fwd/sm_80/bf16/d64/causal' is not cached"

run $K export hstu_fwd/sm_80/bf16/d64/causal "$tmp/none.cubin"
check_rc "export of an uncached key exits 1" 1
check_has "export failure format" "$(first_line "$err")" "kiln: cannot export 'hstu_fwd/sm_80/bf16/d64/causal' to '$tmp/none.cubin': KILN_"

# ------------------------------------------------------------ real compiles
k1=hstu_fwd/sm_80/bf16/d64/causal
k2=hstu_fwd/sm_80/bf16/d64/none
k3=hstu_fwd/sm_80/fp16/d64/causal
if [ $have_nvrtc = 0 ]; then
    skipped "prewarm, ls, show, stats, verify, export, clear (no NVRTC)"
else
    t0=$(date +%s)
    run $K prewarm --arch sm_80 hstu_fwd/sm_90a/bf16/d64/causal $k2
    check_rc "prewarm of 2 keys exits 0" 0
    check_has "prewarm prints ok for key 1" "$err" "ok $k1 "
    check_has "prewarm prints ok for key 2" "$err" "ok $k2 "
    check_has "prewarm summary" "$err" "prewarm: 2 keys: 2 compiled, 0 already cached, 0 failed in "

    run $K ls
    check_rc "ls exits 0" 0
    check_eq "ls lists both keys in order" "$(printf '%s\n' "$out" | awk '{print $1}' | sort)" "$k1
$k2"
    check_eq "ls prints one line per entry" "$(printf '%s\n' "$out" | wc -l | tr -d ' ')" 2
    run $K ls 'hstu_fwd/*/none'
    check_eq "ls PATTERN filters" "$(printf '%s\n' "$out" | awk '{print $1}')" "$k2"
    run $K ls hstu_fwd/sm_80/bf16/d64/none/norab
    check_eq "ls KEY canonicalizes" "$(printf '%s\n' "$out" | awk '{print $1}')" "$k2"
    run $K ls --json
    printf '%s\n' "$out" >"$tmp/ls.json"
    check_json "ls --json is a valid array of 2" "$tmp/ls.json" \
        "len(d) == 2 and sorted(e['key'] for e in d) == ['$k1', '$k2'] and all(e['bytes'] > 0 for e in d)"

    run $K show $k1
    check_rc "show exits 0" 0
    check_eq "show first line" "$(first_line "$out")" "key:        $k1"
    check_has "show prints the prelude" "$out" "prelude:"
    check_has "show prints the prelude's text" "$out" "#define KILN_HEAD_DIM 64"
    check_has "show prints the nvrtc log header" "$out" "nvrtc log:"
    run $K show --json hstu_fwd/sm_90a/bf16/d64/causal/norab --arch sm_80
    printf '%s\n' "$out" >"$tmp/show.json"
    check_json "show --json is valid, canonicalized, with the prelude" "$tmp/show.json" \
        "d[0]['key'] == '$k1' and 'KILN_HEAD_DIM 64' in d[0]['prelude'] and 'log' in d[0]"

    run $K stats
    check_rc "stats exits 0" 0
    check_has "stats counts 2 entries" "$out" "entries:     2"
    check_has "stats names the database" "$out" "$cache"
    run $K stats --json
    printf '%s\n' "$out" >"$tmp/stats.json"
    check_json "stats --json counts 2" "$tmp/stats.json" "d['entries'] == 2 and d['bytes'] > 0 and d['writable']"

    run $K verify
    check_rc "verify exits 0" 0
    check_eq "verify output" "$out" "checked 2 rows: 0 bad, 0 dropped; integrity ok"
    run $K verify --json
    printf '%s\n' "$out" >"$tmp/verify.json"
    check_json "verify --json" "$tmp/verify.json" "d['checked'] == 2 and d['bad'] == 0 and d['integrity_ok'] and d['bad_rows'] == []"

    run $K export $k1 "$tmp/k1.cubin"
    check_rc "export exits 0" 0
    magic=$(dd if="$tmp/k1.cubin" bs=4 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
    check_eq "export writes an ELF file" "$magic" "7f454c46"

    # the same keys again: cached, nothing compiles
    run $K prewarm -j 1 $k1 $k2
    check_rc "prewarm of cached keys exits 0" 0
    check_has "prewarm of cached keys says cached" "$err" "ok $k1 "
    check_has "prewarm of cached keys marks them" "$err" " ms (cached)"
    check_has "prewarm of cached keys summary" "$err" "prewarm: 2 keys: 0 compiled, 2 already cached, 0 failed in "

    # a pattern: fp16 and bf16 (cached) of d64/causal; worker processes
    run $K prewarm --workers processes 'hstu_fwd/sm_80/[bf][fp]16/d64/causal'
    check_rc "prewarm of a pattern exits 0" 0
    check_has "prewarm of a pattern compiles the new key" "$err" "ok $k3 "
    check_has "prewarm of a pattern summary" "$err" "prewarm: 2 keys: 1 compiled, 1 already cached, 0 failed in "
    run $K stats --json
    printf '%s\n' "$out" >"$tmp/stats3.json"
    check_json "stats counts 3 after the pattern" "$tmp/stats3.json" "d['entries'] == 3"

    # a failing compile (NVRTC replaced by a library that is not NVRTC)
    notnvrtc=
    for lib in /lib/x86_64-linux-gnu/libm.so.6 /lib/aarch64-linux-gnu/libm.so.6 \
               /lib64/libm.so.6 /usr/lib/libm.so.6 /lib/libm.so.6; do
        if [ -f "$lib" ]; then notnvrtc=$lib; break; fi
    done
    [ -n "$notnvrtc" ] || skipped "failing compiles (no libm.so.6 to pose as NVRTC)"
    for m in ${notnvrtc:+threads processes}; do
        KILN_NVRTC_PATH=$notnvrtc
        export KILN_NVRTC_PATH
        run $KILN --no-cache prewarm --workers $m \
            hstu_fwd/sm_80/fp16/d32/none hstu_fwd/sm_80/fp16/d32/causal
        unset KILN_NVRTC_PATH
        check_rc "prewarm with failing compiles exits 1 ($m)" 1
        check_has "prewarm prints FAIL KEY: status ($m)" "$err" "FAIL hstu_fwd/sm_80/fp16/d32/none: KILN_"
        check_has "prewarm failure summary ($m)" "$err" "prewarm: 2 keys: 0 compiled, 0 already cached, 2 failed in "
    done

    run $K --no-cache clear --yes
    check_rc "clear with no writable cache exits 1" 1
    check_eq "clear with no writable cache message" "$err" "kiln: clear: no writable cache to clear (--no-cache)"

    run $K --no-cache ls
    check_eq "--no-cache opens no database" "$out" ""

    run $K evict --max-bytes 1G
    check_eq "evict under the cap removes nothing" "$out" "evicted 0 entries"
    run $K clear --yes 'hstu_fwd/*/fp16/*'
    check_rc "clear --yes PATTERN exits 0" 0
    check_eq "clear --yes PATTERN removes 1" "$out" "removed 1 entry"
    run $K clear --yes
    check_eq "clear --yes removes the rest" "$out" "removed 2 entries"
    run $K ls
    check_eq "ls after clear is empty" "$out" ""
    run $K stats --json
    printf '%s\n' "$out" >"$tmp/stats4.json"
    check_json "stats after clear counts 0" "$tmp/stats4.json" "d['entries'] == 0"
    t1=$(date +%s)
    echo "     (compiles took $((t1 - t0)) s)"
fi

# ------------------------------------------------------------ robustness
# Odd input never crashes: an exit status of 0, 1 or 2, never a signal.
for args in "key ''" "key /" "key //////" "key hstu_fwd" "key hstu_fwd/sm_/bf16/d64/none" \
            "key hstu_fwd/sm_80/bf16/d99999999999999999999/none" \
            "key hstu_fwd/sm_80/bf16/d64/none/bm0" "key hstu_fwd/sm_80/bf16/d64/+++" \
            "ls '['" "ls '*'" "show ''" "prewarm -n ''" "prewarm -n '*'" "export '' ''" \
            "clear --yes '['" "key $(printf 'x%.0s' $(seq 1 600))" \
            "key hstu_fwd/sm_80/bf16/d64/$(printf 'causal+%.0s' $(seq 1 100))none"; do
    eval "run $K $args"
    case $rc in
    0 | 1 | 2) ok "no crash: kiln $(printf '%.50s' "$args")" ;;
    *) bad "no crash: kiln $(printf '%.50s' "$args")" "exit $rc" "$err" ;;
    esac
done

# bake: a database for a read-only layer
help_line bake "usage: kiln bake [--from DB] OUT"
run $KILN bake
check_rc "bake without OUT exits 2" 2
run $KILN bake --from "$tmp/no-such.db" "$tmp/never.db"
check_rc "bake of a missing database exits 1" 1
check_lacks "a failed bake writes nothing" "$(ls "$tmp")" "never.db"
if [ -f "$KILN_CACHE_DIR/kiln.db" ]; then
    run $KILN bake "$tmp/baked.db"
    check_rc "bake exits 0" 0
    check_has "bake says what it wrote" "$out" "into $tmp/baked.db"
    check_eq "bake leaves no -wal" "$(ls "$tmp" | grep -c 'baked.db-')" "0"
    : >"$tmp/walled.db-wal"
    run $KILN bake "$tmp/walled.db"
    check_rc "bake refuses while OUT-wal exists" 1
    check_has "bake names the -wal" "$err" "walled.db-wal exists"
else
    skipped "bake of the default cache (no kiln.db)"
fi

[ "$skip" = 0 ] || echo "$skip skipped"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
