"""Drop-in replacements for other projects' HSTU attention modules.

    kiln.compat.hstu_attn_interface   NVIDIA recsys-examples corelib/hstu
                                      (the Hopper `hstu_attn_interface` module)
    kiln.compat.hstu                  FBGEMM's `hstu` package
                                      (fbgemm_gpu/experimental/hstu)

Each exposes the same names with the same signatures and defaults as the
original, computing with kiln.  To run code written for them unchanged:

    import sys, kiln.compat.hstu_attn_interface as m
    sys.modules["hstu_attn_interface"] = m

What kiln does not implement yet (paged KV caches) raises kiln.Unsupported (a NotImplementedError) naming the argument.  The quantize_* helpers are plain torch functions and work.
"""

__all__ = ["hstu_attn_interface", "hstu"]


def __getattr__(name):
    if name in __all__:
        import importlib

        mod = importlib.import_module(f".{name}", __name__)
        globals()[name] = mod
        return mod
    raise AttributeError(f"module 'kiln.compat' has no attribute {name!r}")
