#!/usr/bin/env python3
"""variants.py -- enumerate HSTU forward specializations for the standalone
checks.  Prints one line per variant:
  name arch dtype d bm bn warps causal local context target delta rab
Modes:  defaults  -- every dtype x head_dim x mask set x rab at each arch's
                     default tiles (mirrors dispatch/hstu_tiles.c)
        tiles     -- every tile choice tiles_check accepts, two heavy mask sets
        gpu       -- what the device harness runs (sm_90 build)"""
import sys

MASKS = [  # causal local context target delta
    ("none", 0, 0, 0, 0, 0),
    ("causal", 1, 0, 0, 0, 0),
    ("local", 0, 1, 0, 0, 0),
    ("causal_local", 1, 1, 0, 0, 0),
    ("ctx", 1, 0, 1, 0, 0),
    ("tgt", 1, 0, 0, 1, 0),
    ("ctx_tgt", 1, 0, 1, 1, 0),
    ("delta", 0, 0, 0, 0, 1),
    ("delta_causal", 1, 0, 0, 0, 1),
    ("delta_local", 0, 1, 0, 0, 1),
]
SMEM = {80: 166912, 86: 101376, 89: 101376, 90: 232448}
CHOICES = {32: [(128, 64, 4)], 64: [(128, 64, 4), (64, 64, 4)],
           128: [(128, 32, 4), (64, 32, 4)],
           256: [(64, 32, 4), (64, 16, 4)]}
GPU_CANDIDATES = {32: [(128, 64, 4), (128, 32, 4), (64, 64, 2), (128, 64, 8)],
                  64: [(128, 64, 4), (128, 32, 4), (64, 32, 2), (64, 64, 2)],
                  128: [(128, 32, 4), (64, 32, 2), (64, 32, 4)],
                  256: [(64, 32, 4), (64, 64, 4), (64, 16, 4), (32, 32, 2)]}
ARCH_NAME = {80: "sm_80", 86: "sm_86", 89: "sm_89", 90: "sm_90a"}


def smem(d, bm, bn):
    return 2 * (bm * d + 4 * bn * d + 2 * bm * bn)


def default_tiles(arch, d):
    for t in CHOICES[d]:
        if smem(d, *t[:2]) <= SMEM[arch]:
            return t
    return CHOICES[d][-1]


def tiles_ok(d, bm, bn, w):
    rpw = bm // w
    if bm not in (16 * w, 32 * w) or bn not in (16, 32, 64, 128):
        return False
    if rpw == 32 and (d == 256 or bn > 64):
        return False
    if d == 256 and bn > 64:
        return False
    if rpw == 32 and d == 128 and bn > 32:
        return False
    return True


def line(arch, dt, d, t, m, rab):
    name = "%s_%s_d%d_%dx%dx%d_%s%s" % (ARCH_NAME[arch], "bf16" if dt == 2 else "fp16", d,
                                        t[0], t[1], t[2], m[0], "_rab" if rab else "")
    return " ".join(str(x) for x in (name, ARCH_NAME[arch], dt, d, t[0], t[1], t[2]) + m[1:] + (rab,))


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "defaults"
    out = []
    if mode == "defaults":
        for arch in (80, 86, 90):
            for dt in (1, 2):
                for d in (32, 64, 128, 256):
                    for m in MASKS:
                        for rab in (0, 1):
                            out.append(line(arch, dt, d, default_tiles(arch, d), m, rab))
    elif mode == "tiles":
        for arch in (80, 90):
            for d in (32, 64, 128, 256):
                for w in (2, 4, 8):
                    for bm in (16 * w, 32 * w):
                        for bn in (16, 32, 64, 128):
                            if not tiles_ok(d, bm, bn, w) or smem(d, bm, bn) > SMEM[arch]:
                                continue
                            for m in (MASKS[6], MASKS[9]):
                                out.append(line(arch, 2, d, (bm, bn, w), m, 1))
    elif mode == "gpu":
        # every candidate tile of every head dim, full dtype x mask x rab sweep
        for d, ts in GPU_CANDIDATES.items():
            for t in ts:
                for dt in (1, 2):
                    for m in MASKS:
                        for rab in (0, 1):
                            out.append(line(90, dt, d, t, m, rab))
    elif mode == "bench":
        for d, ts in GPU_CANDIDATES.items():
            for t in ts:
                out.append(line(90, 2, d, t, MASKS[1], 0))
    for l in out:
        print(l)


main()
