/* kiln_cli.h -- what the files of the kiln command share.  Private to tools/.
 *
 * The CLI uses only the public API (include/kiln.h).  Every verb is a
 * function `int cmd_<verb>(int argc, char **argv)` that receives the
 * arguments after the verb and returns the process exit status:
 *   0  success
 *   1  a runtime failure (or, for verify/prewarm, something was bad)
 *   2  a usage error or a bad key
 */
#ifndef KILN_CLI_H
#define KILN_CLI_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include "kiln.h"

#if defined(__GNUC__)
#define CLI_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CLI_PRINTF(a, b)
#endif

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

/* Global options (given before the verb, or anywhere after it). */
typedef struct cli_globals {
    const char *cache_dir; /* --cache-dir; NULL: the library's default */
    int no_cache;          /* --no-cache */
    int verbose;           /* -v count: 1 info, 2+ debug */
} cli_globals;
extern cli_globals g_cli;

/* ---- argument parsing ------------------------------------------------ */

/* One pass over a verb's arguments.  Usage:
 *     cli_args a; cli_args_init(&a, "ls", argc, argv);
 *     while (cli_next(&a)) {
 *         if (cli_flag(&a, "--json")) json = 1;
 *         else if (cli_value(&a, "--arch", NULL, &arch)) ;
 *         else if (a.positional) add(a.arg);
 *         else return cli_unknown(&a);
 *     }
 *     if (a.error) return EXIT_USAGE;
 * Options may come before or after positionals; "--" ends options; "-" is a
 * positional.  Values: "--opt VALUE" or "--opt=VALUE" (short: "-j 4", "-j4").
 * Global options and --help are handled inside cli_next(). */
typedef struct cli_args {
    const char *verb;
    int argc;
    char **argv;
    int i;          /* index of the current argument */
    int only_pos;   /* after "--" */
    const char *arg;
    int positional; /* the current argument is a positional */
    int error;      /* a usage error was printed: return EXIT_USAGE */
    int help;       /* --help was given and printed: return EXIT_OK */
} cli_args;

void cli_args_init(cli_args *a, const char *verb, int argc, char **argv);
/* Advance; 0 at the end, or after an error or --help (check a->error and
 * a->help). */
int cli_next(cli_args *a);
int cli_flag(cli_args *a, const char *long_name);
/* short_name may be NULL.  On a missing value prints a usage error, sets
 * a->error and returns 1 (the caller's loop then ends at cli_next). */
int cli_value(cli_args *a, const char *long_name, const char *short_name,
              const char **val);
/* Report the current argument as unknown; returns EXIT_USAGE. */
int cli_unknown(cli_args *a);

/* ---- messages -------------------------------------------------------- */

/* "kiln: VERB: <msg>" and "Try 'kiln VERB --help'." on stderr; returns
 * EXIT_USAGE. */
int cli_usage(const char *verb, const char *fmt, ...) CLI_PRINTF(2, 3);
/* "kiln: WHAT: KILN_E...: <kiln_last_error()>" on stderr; returns EXIT_FAIL.
 * Call it right after the failing kiln call (the detail is per thread and
 * valid until the next call). */
int cli_fail(kiln_status s, const char *what_fmt, ...) CLI_PRINTF(2, 3);
/* "kiln: bad key 'KEY': <kiln_last_error()>"; returns EXIT_USAGE. */
int cli_bad_key(const char *key);
/* A failed key parse is a usage error (2) for EBADARG/EUNSUPPORTED and a
 * runtime failure (1) otherwise (e.g. no device to take the arch from). */
int cli_key_error(kiln_status s, const char *key);

/* Print a verb's help (stdout). */
void cli_print_help(const char *verb, FILE *f);

/* ---- engine ---------------------------------------------------------- */

/* Create an engine from the global options; on failure prints the error and
 * returns NULL. */
kiln_engine *cli_engine(void);
/* The log sink the CLI gives the library; prewarm's progress bar installs a
 * hook that clears its line first. */
void cli_set_log_hook(void (*before)(void), void (*after)(void));

/* ---- keys ------------------------------------------------------------ */

#define CLI_KEY_MAX 512
/* True if text holds an fnmatch metacharacter (a pattern, not a key). */
int cli_is_pattern(const char *text);
/* For PATTERN arguments of ls/clear: a pattern goes through unchanged; a plain
 * key is canonicalized into buf.  Returns 0, or an exit status (error printed). */
int cli_pattern_arg(const char *text, char *buf, size_t n, const char **out);

/* ---- output ---------------------------------------------------------- */

/* A JSON string literal (quotes included), valid UTF-8 out for any bytes in:
 * invalid sequences become U+FFFD. */
void json_str(FILE *f, const char *s);
/* A JSON number, or null if not finite. */
void json_num(FILE *f, double v);
/* "1.2 MiB" */
void fmt_bytes(char *buf, size_t n, double bytes);
/* "2025-01-02T03:04:05Z", "-" for 0. */
void fmt_time(char *buf, size_t n, int64_t unix_seconds);
/* Monotonic seconds. */
double now_s(void);
int stdout_is_tty(void);

/* ---- verbs ----------------------------------------------------------- */

int cmd_info(int argc, char **argv);
int cmd_key(int argc, char **argv);
int cmd_prewarm(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_show(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_clear(int argc, char **argv);
int cmd_evict(int argc, char **argv);
int cmd_export(int argc, char **argv);

#endif
