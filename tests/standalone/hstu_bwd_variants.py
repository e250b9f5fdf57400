#!/usr/bin/env python3
"""hstu_bwd_variants.py -- enumerate HSTU backward specializations for the
standalone checks (templates/hstu_bwd.cu).  One line per variant:
  name arch dtype d bm bn warps causal local context target delta rab drab det
Modes:  all    -- every dtype x head_dim x mask set x (rab, drab) x det at each
                  arch's default tiles (sm_80, sm_86, sm_90a; mirrors
                  dispatch/hstu_bwd_tiles.c), plus the alternative tiles
        gpu    -- what the device harness checks (sm_90a builds)
        bench  -- the timed variants (sm_90a)"""
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
CHOICES = {32: [(64, 128, 8), (64, 64, 4)], 64: [(64, 128, 8), (64, 64, 4)],
           128: [(64, 128, 8), (32, 128, 8), (32, 64, 4)],
           256: [(32, 64, 8), (32, 32, 4), (32, 16, 2)]}
EXTRA = {32: [(32, 64, 4), (128, 128, 8)], 64: [(128, 128, 8), (16, 64, 4)],
         128: [(16, 128, 8), (64, 64, 4)], 256: [(64, 32, 4)]}
ARCH_NAME = {80: "sm_80", 86: "sm_86", 90: "sm_90a"}


def pitch(c):
    return 2 * c + 16


def smem(which, d, bm, bn, w):
    if which == 1:
        wk = w // (bm // 16)
        bnq = max(16 * wk, min(bn, 64))
        return 2 * bm * pitch(d) + 4 * bnq * pitch(d) + 2 * bm * pitch(bnq)
    ds = 2 if d == 256 else 1
    return 2 * bn * pitch(d) + 4 * bm * pitch(d) + (1 + ds) * bn * pitch(bm) + 2 * bm * pitch(bn)


def default_tiles(arch, d):
    for t in CHOICES[d]:
        if smem(0, d, *t) <= SMEM[arch] and smem(1, d, *t) <= SMEM[arch]:
            return t
    return CHOICES[d][-1]


def line(arch, dt, d, t, m, rab, drab, det, extra=""):
    """extra: comma-separated NAME=VALUE tuning defines (standalone only)"""
    name = "%s_%s_d%d_%dx%dx%d_%s%s%s%s" % (ARCH_NAME[arch], "bf16" if dt == 2 else "fp16", d, t[0], t[1], t[2],
                                            m[0], "_rab" if rab else "", "_drab" if drab else "",
                                            "_det" if det else "")
    if extra:
        name += "_" + extra.replace("KILN_BWD_", "").replace("=", "").replace(",", "_").lower()
    fields = (name, ARCH_NAME[arch], dt, d, t[0], t[1], t[2]) + m[1:] + (rab, drab, det)
    return " ".join(str(x) for x in fields + ((extra,) if extra else ()))


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "all"
    out = []
    if mode == "all":
        for arch in (80, 86, 90):
            for dt in (1, 2):
                for d in (32, 64, 128, 256):
                    for m in MASKS:
                        for rab, drab in ((0, 0), (1, 0), (1, 1)):
                            for det in (0, 1):
                                out.append(line(arch, dt, d, default_tiles(arch, d), m, rab, drab, det))
        for arch in (80, 90):
            for d, ts in EXTRA.items():
                for t in ts:
                    if smem(0, d, *t) > SMEM[arch] or smem(1, d, *t) > SMEM[arch]:
                        continue
                    for m in (MASKS[6], MASKS[9]):
                        for det in (0, 1):
                            out.append(line(arch, 2, d, t, m, 1, 1, det))
    elif mode == "gpu":
        # every mask at the sm_90 defaults, features rotated so that each head
        # dim and dtype meets rab, drab and both dq modes
        for dt in (1, 2):
            for d in (32, 64, 128, 256):
                for k, m in enumerate(MASKS):
                    sel = (k + dt + d // 32) % 4
                    rab, drab = ((0, 0), (1, 0), (1, 1), (1, 1))[sel]
                    det = (k + dt) % 2
                    out.append(line(90, dt, d, default_tiles(90, d), m, rab, drab, det))
                    if sel == 0:  # and the same mask with rab and drab, other dq mode
                        out.append(line(90, dt, d, default_tiles(90, d), m, 1, 1, 1 - det))
        # the other archs' defaults and alternative tiles, heavy masks
        seen = set()
        for d in (32, 64, 128, 256):
            ts = [default_tiles(a, d) for a in (80, 86)] + EXTRA[d]
            for t in ts:
                if t == default_tiles(90, d) or (d, t) in seen or smem(0, d, *t) > SMEM[90] or smem(1, d, *t) > SMEM[90]:
                    continue
                seen.add((d, t))
                for i, m in enumerate((MASKS[6], MASKS[9], MASKS[3])):
                    for det in (0, 1):
                        out.append(line(90, 1 + (i + det) % 2, d, t, m, 1, 1 if i < 2 else 0, det))
        # tuning overrides that the bench mode times
        for extra, det in (("KILN_BWD_CW=64", 0), ("KILN_BWD_CW=64", 1), ("KILN_BWD_KU=8", 0)):
            for m in (MASKS[1], MASKS[0], MASKS[8]):
                out.append(line(90, 2 - det, 128, (64, 128, 8), m, 0, 0, det, extra))
        out.append(line(90, 2, 128, (64, 128, 8), MASKS[1], 0, 0, 0, "KILN_BWD_KU=8,KILN_BWD_CW=64"))
    elif mode == "bench":
        for extra in ("", "KILN_BWD_CW=64", "KILN_BWD_KU=8"):
            out.append(line(90, 2, 128, (64, 128, 8), MASKS[1], 0, 0, 0, extra))
        out.append(line(90, 2, 128, (64, 128, 8), MASKS[1], 0, 0, 1))
        out.append(line(90, 2, 128, (64, 128, 8), MASKS[6], 1, 0, 0))
        out.append(line(90, 2, 64, (64, 128, 8), MASKS[1], 0, 0, 0))
        out.append(line(90, 2, 256, (32, 64, 8), MASKS[1], 0, 0, 0))
    for l in out:
        print(l)


main()
