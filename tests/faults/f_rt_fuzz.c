/* f_rt_fuzz.c -- issue 5 item 8 in `make faults`: builds the sanitized
 * fuzzer with tests/faults/build_fuzz.sh (its own flags) and runs it.  Quick
 * mode is reproducible (fixed seed, fixed run count) so CI cannot turn red by
 * chance; --long explores with a random seed for 300 s.  Skips (exit 0, says
 * so) when clang is missing.  A crash, sanitizer report or broken invariant
 * fails, and the input is kept in $KILN_BUILD/faults/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    int lng = argc > 1 && !strcmp(argv[1], "--long");
    int secs = lng ? 300 : 60;
    const char *budget = lng ? "" : "-seed=1 -runs=1000000 ";
    const char *b = getenv("KILN_BUILD");
    char build[256], cmd[1024];
    snprintf(build, sizeof build, "%s", b && *b ? b : "build");
    if (system("command -v clang >/dev/null 2>&1") != 0) {
        printf("skipped: clang not installed (fuzzer not run)\n");
        return 0;
    }
    snprintf(cmd, sizeof cmd, "sh tests/faults/build_fuzz.sh '%s'", build);
    if (system(cmd) != 0) return 1;
    snprintf(cmd, sizeof cmd,
             "d=$(mktemp -d) && '%s/faults/fuzz_api' -max_total_time=%d -rss_limit_mb=2048 "
             "-artifact_prefix='%s/faults/' %s"
             "-print_final_stats=1 \"$d\" >\"$d.log\" 2>&1; rc=$?; tail -n 12 \"$d.log\"; "
             "rm -rf \"$d\" \"$d.log\"; exit $rc",
             build, secs, build, budget);
    int rc = system(cmd);
    printf("fuzz_api %s: %s\n", lng ? "300 s, random seed" : "1e6 runs, seed 1",
           rc == 0 ? "clean" : "FAILED");
    return rc == 0 ? 0 : 1;
}
