/* hstu_bwd_nvrtc_check.c -- compile one HSTU backward specialization with
 * NVRTC the way the runtime does (every templates/ file as an in-memory
 * header by base name, no include path) and print the ptxas report.
 * Standalone test tool, not part of the build.
 *   cc -std=c11 hstu_bwd_nvrtc_check.c -I$CUDA/include -L$CUDA/lib64 -lnvrtc -o bwd_nvrtc_check
 *   ./bwd_nvrtc_check TEMPLATE_DIR sm_90a 'KILN_ARCH=900 KILN_DTYPE=2 KILN_HEAD_DIM=128 ...' */
#define _GNU_SOURCE
#include <nvrtc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *dir, const char *name)
{
    char path[1024];
    FILE *f;
    long n;
    char *s;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    s = malloc((size_t)n + 1);
    if (fread(s, 1, (size_t)n, f) != (size_t)n) exit(2);
    s[n] = 0;
    fclose(f);
    return s;
}

int main(int argc, char **argv)
{
    const char *names[] = {"hstu_bwd.cu", "kiln_bwd_common.cuh", "kiln_common.cuh", "hstu_params.h",
                           "hstu_bwd_params.h"};
    enum { NH = 5 };
    const char *srcs[NH];
    char prelude[4096] = "", arch_opt[64], *defs, *tok;
    const char *opts[4];
    nvrtcProgram prog;
    nvrtcResult r;
    size_t log_n, cubin_n;
    char *log;
    int i;
    if (argc < 4) { fprintf(stderr, "usage: %s DIR sm_XX 'DEFS'\n", argv[0]); return 2; }
    for (i = 0; i < NH; i++) srcs[i] = slurp(argv[1], names[i]);
    defs = strdup(argv[3]);
    for (tok = strtok(defs, " "); tok; tok = strtok(NULL, " ")) {
        char *eq = strchr(tok, '=');
        if (!eq) continue;
        *eq = ' ';
        strcat(prelude, "#define ");
        strcat(prelude, tok);
        strcat(prelude, "\n");
    }
    strcat(prelude, "#include \"hstu_bwd.cu\"\n");
    snprintf(arch_opt, sizeof arch_opt, "--gpu-architecture=%s", argv[2]);
    opts[0] = arch_opt;
    opts[1] = "-DKILN_NVRTC=1";
    opts[2] = "-Xptxas=-v";
    opts[3] = "-std=c++17";
    r = nvrtcCreateProgram(&prog, prelude, "kiln_prelude.cu", NH, srcs, names);
    if (r != NVRTC_SUCCESS) { fprintf(stderr, "create: %s\n", nvrtcGetErrorString(r)); return 1; }
    r = nvrtcCompileProgram(prog, 4, opts);
    nvrtcGetProgramLogSize(prog, &log_n);
    log = malloc(log_n + 1);
    nvrtcGetProgramLog(prog, log);
    printf("%s\n", log);
    if (r != NVRTC_SUCCESS) { printf("compile: %s\n", nvrtcGetErrorString(r)); return 1; }
    nvrtcGetCUBINSize(prog, &cubin_n);
    printf("cubin %zu bytes\n", cubin_n);
    nvrtcDestroyProgram(&prog);
    return 0;
}
