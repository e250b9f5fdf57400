/* f_store_ro.c -- issue 5 item 5: read-only layers and kiln_cache_bake.
 *
 * Cases: bake writes a DELETE-mode, integrity-checked, 0444 file with no -wal
 * and refuses while OUT-wal exists; the baked file as a read-only layer
 * serves hits (no compile) with and without a leftover -wal beside it; a
 * missing layer; no writable location at all; a 0555 directory holding a
 * 0444 kiln.db opened by a non-root user.  Every launch loads verified bytes
 * equal to a fresh compile and no SQLITE_READONLY reaches the caller. */
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util_store.h"

static st_ref *R;

static void launch_all(kiln_engine *e, int expect_compiles)
{
    for (int i = 0; i < 2; i++) st_launch(e, &R[i]);
    kiln_cache_stats s;
    CHECK(kiln_cache_stats_get(e, &s) == KILN_OK, "stats");
    if (expect_compiles >= 0)
        CHECK(s.compiles == expect_compiles, "%lld compiles, want %d", (long long)s.compiles,
              expect_compiles);
    CHECK(!st_log_count("readonly") && !st_log_count("READONLY"), "SQLITE_READONLY surfaced");
}

int main(int argc, char **argv)
{
    st_init(argc, argv, "ro");
    R = st_refs(2);
    char baked[700], wal[720];

    st_case("bake", 30);
    const char *bd = st_dir("bake");
    snprintf(baked, sizeof baked, "%s/layer.db", bd);
    snprintf(wal, sizeof wal, "%s-wal", baked);
    int64_t rows = 0;
    CHECK(kiln_cache_bake(st_ref_db(), baked, &rows) == KILN_OK, "bake: %s", kiln_last_error());
    CHECK(rows == 2, "%lld rows", (long long)rows);
    CHECK(!st_exists(wal), "-wal left");
    struct stat sb;
    stat(baked, &sb);
    CHECK((sb.st_mode & 0777) == 0444, "mode %o", sb.st_mode & 0777);
    CHECK(st_integrity_ok(baked), "integrity");
    {   /* header bytes 18/19 are 1 in rollback (DELETE) mode, 2 in WAL */
        FILE *f = fopen(baked, "rb");
        unsigned char h[20];
        CHECK(f && fread(h, 1, 20, f) == 20, "read header");
        fclose(f);
        CHECK(h[18] == 1 && h[19] == 1, "not in rollback journal mode (%d/%d)", h[18], h[19]);
    }
    FILE *w = fopen(wal, "w");
    fputs("stale", w);
    fclose(w);
    char out2[720];
    snprintf(out2, sizeof out2, "%s/second.db", bd);
    char wal2[740];
    snprintf(wal2, sizeof wal2, "%s-wal", out2);
    st_copy(wal, wal2);
    CHECK(kiln_cache_bake(st_ref_db(), out2, NULL) == KILN_ECACHE, "bake must refuse with a -wal");
    CHECK(!st_exists(out2), "refused bake wrote the output");
    unlink(wal2);
    st_case_ok("2 rows, 0444, rollback mode, refuses beside a -wal");

    st_case("ro layer with a leftover -wal", 30);
    kiln_engine *e = st_engine(st_dir("w1"), baked, 0);
    launch_all(e, 0);
    kiln_engine_destroy(e);
    unlink(wal);
    st_case_ok("hits served, 0 compiles");

    st_case("ro layer, clean", 30);
    e = st_engine(st_dir("w2"), baked, 0);
    launch_all(e, 0);
    kiln_engine_destroy(e);
    st_case_ok("0 compiles");

    st_case("ro layer missing", 30);
    char missing[700];
    snprintf(missing, sizeof missing, "%s/nope/kiln.db", st_root());
    e = st_engine(st_dir("w3"), missing, 0);
    launch_all(e, 2);
    kiln_engine_destroy(e);
    CHECK(st_log_warnings() == 0, "a missing layer is not an incident");
    st_case_ok("compiled into the writable layer");

    st_case("no writable location at all", 30);
    e = st_engine("/proc/kiln-no-such-dir", baked, 0);
    launch_all(e, 0);
    kiln_engine_destroy(e);
    CHECK(st_log_warnings() <= 1, "%d warnings", st_log_warnings());
    e = st_engine("/proc/kiln-no-such-dir", "", 0);
    launch_all(e, 2);
    kiln_engine_destroy(e);
    st_case_ok("layer hits, misses served from memory");

    st_case("0555 dir, 0444 db, non-root", 60);
    const char *rd = st_dir("rodir");
    char rdb[700];
    snprintf(rdb, sizeof rdb, "%s/kiln.db", rd);
    st_copy(baked, rdb);
    if (geteuid() == 0) {
        chown(rd, 65534, 65534);
        chown(rdb, 65534, 65534);
    }
    chmod(rdb, 0444);
    chmod(rd, 0555);
    pid_t p = fork();
    if (p == 0) {
        if (geteuid() == 0 && (setgid(65534) || setuid(65534))) _exit(5);
        kiln_engine *ce = st_engine(rd, "", 0);
        launch_all(ce, 0); /* kiln.db read where it is: hits */
        kiln_engine_destroy(ce);
        _exit(0);
    }
    int status;
    waitpid(p, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    chmod(rd, 0755);
    st_case_ok("%s", geteuid() == 0 ? "as uid 65534" : "as this user");
    return 0;
}
