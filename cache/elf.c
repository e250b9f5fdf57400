/* elf.c -- structural check of a cubin before kiln hands it to the driver.
 *
 * A cubin is an ELF64 little-endian image with e_machine EM_CUDA (190).  The
 * check is deliberately shallow -- it proves the tables the driver will walk
 * lie inside the buffer -- and reads every field byte by byte, so it needs no
 * alignment and works whatever the host's byte order.  All arithmetic is in
 * uint64_t with subtractions instead of additions, so no field value can
 * overflow a bound. */
#include <stdint.h>
#include <string.h>

#include "cache/cache.h"

#define EHDR_SIZE 64u  /* sizeof(Elf64_Ehdr) */
#define PHDR_SIZE 56u  /* sizeof(Elf64_Phdr) */
#define SHDR_SIZE 64u  /* sizeof(Elf64_Shdr) */
#define EM_CUDA 190u
#define SHT_NOBITS 8u

static uint64_t rd(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Is [off, off + size) inside [0, len)? */
static int inside(uint64_t off, uint64_t size, uint64_t len)
{
    return off <= len && size <= len - off;
}

const char *kiln__elf_check(const void *data, size_t len)
{
    const uint8_t *b = data;
    if (!b || len < EHDR_SIZE) return "shorter than an ELF header";
    if (memcmp(b, "\177ELF", 4) != 0) return "not an ELF image (bad magic)";
    if (b[4] != 2) return "not a 64-bit ELF image";
    if (b[5] != 1) return "not a little-endian ELF image";
    if (rd(b + 18, 2) != EM_CUDA) return "not a CUDA ELF image (e_machine)";

    uint64_t n = len;
    uint64_t phoff = rd(b + 32, 8), shoff = rd(b + 40, 8);
    uint64_t ehsize = rd(b + 52, 2);
    uint64_t phentsize = rd(b + 54, 2), phnum = rd(b + 56, 2);
    uint64_t shentsize = rd(b + 58, 2), shnum = rd(b + 60, 2);
    uint64_t shstrndx = rd(b + 62, 2);

    if (ehsize < EHDR_SIZE || ehsize > n) return "bad ELF header size";

    if (phnum) {
        if (phentsize < PHDR_SIZE) return "bad program header entry size";
        if (!inside(phoff, phnum * phentsize, n))
            return "program header table outside the image";
        for (uint64_t i = 0; i < phnum; i++) {
            const uint8_t *ph = b + phoff + i * phentsize;
            if (!inside(rd(ph + 8, 8), rd(ph + 32, 8), n))
                return "segment outside the image";
        }
    }

    if (shnum == 0) return "no section header table";
    if (shentsize < SHDR_SIZE) return "bad section header entry size";
    if (!inside(shoff, shnum * shentsize, n))
        return "section header table outside the image";
    if (shstrndx >= shnum) return "bad section name table index";
    for (uint64_t i = 0; i < shnum; i++) {
        const uint8_t *sh = b + shoff + i * shentsize;
        if (rd(sh + 4, 4) == SHT_NOBITS) continue;
        if (!inside(rd(sh + 24, 8), rd(sh + 32, 8), n))
            return "section outside the image";
    }
    return NULL;
}
