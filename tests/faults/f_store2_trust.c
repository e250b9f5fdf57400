/* f_store2_trust.c -- issue 5 item 11, at the engine level.
 *
 * A cache directory owned by another user, group-writable, world-writable, a
 * symlink; a symlinked kiln.db, a hard-linked one; a planted kiln.db-wal (a
 * symlink, a hard link, owned by another user) and kiln.db-shm likewise.  Each
 * time the database the engine would read holds a valid row for the key
 * launched (a copy of the reference db): the engine must refuse the location
 * with exactly one warning, compile (so nothing was read through it), serve
 * the kernel from memory afterwards, and leave the planted files as they
 * were.  Then: new directories are created 0700 with umask 0. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util_store.h"

static int64_t rows(const char *db) { return st_sql_int(db, "SELECT count(*) FROM kernels"); }

static void expect_refused(const char *dir, const st_ref *r, const char *watch_db)
{
    int64_t before = watch_db ? rows(watch_db) : 0;
    kiln_engine *e = st_engine(dir, "", 0);
    kiln_cache_stats s;
    CHECK(kiln_cache_stats_get(e, &s) == KILN_OK, "stats");
    CHECK(!s.writable, "the location was used: %s", s.path);
    CHECK(st_launch(e, r) == 1, "no load");
    CHECK(kiln_cache_stats_get(e, &s) == KILN_OK && s.compiles == 1 && s.disk_hits == 0,
          "served from the refused location: %lld compiles, %lld disk hits",
          (long long)s.compiles, (long long)s.disk_hits);
    CHECK(st_launch(e, r) == 0, "not served from memory");
    CHECK(st_log_warnings() == 1, "%d warning lines, want 1", st_log_warnings());
    kiln_engine_destroy(e);
    if (watch_db) CHECK(rows(watch_db) == before, "the planted database was written");
}

static char g_db[700];
static const char *warm(const char *name)
{
    const char *d = st_dir(name);
    snprintf(g_db, sizeof g_db, "%s/kiln.db", d);
    st_copy(st_ref_db(), g_db);
    return d;
}

int main(int argc, char **argv)
{
    st_init(argc, argv, "trust");
    st_ref *R = st_refs(1);
    int root = geteuid() == 0;
    const char *dir;
    char path[800], other[800];

    /* sanity: a well-formed warm directory hits */
    st_case("baseline", 30);
    dir = warm("base");
    {
        kiln_engine *e = st_engine(dir, "", 0);
        kiln_cache_stats s;
        st_launch(e, &R[0]);
        CHECK(kiln_cache_stats_get(e, &s) == KILN_OK && s.compiles == 0 && s.disk_hits == 1,
              "baseline not a hit");
        kiln_engine_destroy(e);
    }
    st_case_ok("hit");

    st_case("dir owned by another user", 30);
    if (!root) {
        st_case_ok("SKIPPED: not root, cannot chown (uid %u)", (unsigned)geteuid());
    } else {
        dir = warm("owner");
        CHECK(chown(dir, 65534, 65534) == 0, "chown: %s", strerror(errno));
        expect_refused(dir, &R[0], g_db);
        st_case_ok("refused, 1 warning, served from memory");
    }

    static const int modes[] = {0770, 0707, 0777, 01777};
    for (int i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "dir mode %04o", modes[i]);
        st_case(name, 30);
        dir = warm("mode");
        CHECK(chmod(dir, (mode_t)modes[i]) == 0, "chmod");
        expect_refused(dir, &R[0], g_db);
        chmod(dir, 0700);
        st_case_ok("refused, 1 warning, served from memory");
    }

    st_case("dir is a symlink", 30);
    dir = warm("linked-target");
    snprintf(path, sizeof path, "%s/linked-dir", st_root());
    unlink(path);
    CHECK(symlink(dir, path) == 0, "symlink");
    expect_refused(path, &R[0], g_db);
    st_case_ok("refused, 1 warning, served from memory");

    st_case("symlinked kiln.db", 30);
    dir = warm("symdb-target");
    snprintf(other, sizeof other, "%s", g_db);
    dir = st_dir("symdb");
    snprintf(path, sizeof path, "%s/kiln.db", dir);
    CHECK(symlink(other, path) == 0, "symlink");
    expect_refused(dir, &R[0], other);
    CHECK(st_exists(path), "the symlink was removed");
    st_case_ok("refused, 1 warning, served from memory");

    st_case("hard-linked kiln.db", 30);
    dir = warm("hardlink-target");
    snprintf(other, sizeof other, "%s/elsewhere.db", dir);
    CHECK(rename(g_db, other) == 0, "rename");
    dir = st_dir("hardlink");
    snprintf(path, sizeof path, "%s/kiln.db", dir);
    CHECK(link(other, path) == 0, "link: %s", strerror(errno));
    expect_refused(dir, &R[0], other);
    st_case_ok("refused, 1 warning, served from memory");

    /* planted -wal / -shm beside a good kiln.db */
    static const char *sfx[] = {"-wal", "-shm"};
    static const char *how[] = {"a symlink", "a hard link", "owned by another user"};
    for (int s = 0; s < 2; s++)
        for (int h = 0; h < 3; h++) {
            char name[96];
            snprintf(name, sizeof name, "planted kiln.db%s: %s", sfx[s], how[h]);
            st_case(name, 30);
            if (h == 2 && !root) {
                st_case_ok("SKIPPED: not root, cannot chown");
                continue;
            }
            dir = warm("planted");
            snprintf(path, sizeof path, "%s%s", g_db, sfx[s]);
            snprintf(other, sizeof other, "%s/planted%s", st_root(), sfx[s]);
            unlink(other);
            FILE *f = fopen(other, "wb");
            CHECK(f, "create");
            fclose(f);
            if (h == 0) CHECK(symlink(other, path) == 0, "symlink");
            if (h == 1) CHECK(link(other, path) == 0, "link");
            if (h == 2) {
                CHECK(rename(other, path) == 0, "rename");
                CHECK(chown(path, 65534, 65534) == 0, "chown");
            }
            expect_refused(dir, &R[0], NULL);
            CHECK(st_exists(path), "the planted file was removed");
            st_case_ok("refused, 1 warning, served from memory");
        }

    st_case("new dirs 0700 under umask 0", 30);
    {
        mode_t old = umask(0);
        snprintf(path, sizeof path, "%s/a/b/c", st_dir("umask"));
        kiln_engine *e = st_engine(path, "", 0);
        CHECK(st_launch(e, &R[0]) == 1, "load");
        kiln_cache_stats s;
        CHECK(kiln_cache_stats_get(e, &s) == KILN_OK && s.writable, "not writable");
        kiln_engine_destroy(e);
        umask(old);
        CHECK(st_log_warnings() == 0, "warnings");
        for (int k = 0; k < 3; k++) {
            struct stat sb;
            CHECK(stat(path, &sb) == 0, "stat %s", path);
            CHECK((sb.st_mode & 07777) == 0700, "%s created %04o", path,
                  (unsigned)(sb.st_mode & 07777));
            *strrchr(path, '/') = '\0';
        }
        snprintf(path, sizeof path, "%s/umask/a/b/c/kiln.db", st_root());
        struct stat sb;
        CHECK(stat(path, &sb) == 0, "stat db");
        CHECK(!(sb.st_mode & 022), "kiln.db is %04o", (unsigned)(sb.st_mode & 07777));
        st_case_ok("a, a/b, a/b/c all 0700; kiln.db %04o", (unsigned)(sb.st_mode & 07777));
    }
    return 0;
}
