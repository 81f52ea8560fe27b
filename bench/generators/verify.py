"""Comparison of a loaded generator with outputs recorded from an official implementation.

Used by the tests (against the committed fixtures) and by ``scripts/make_generator_fixtures.py --compare``
(against held-out files); the recorded tensors are described in that script.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def measure(gen, t: dict[str, torch.Tensor], split_res: int) -> dict[str, float]:
    """Max abs differences of the project generator ``gen`` against the official outputs ``t``.

    Args:
        gen: a generator with the benchmark's interface.
        t: recorded official outputs (``z``, ``w``, ``img_z``, ``ws``, ``img_ws``, ``w_trunc``,
            ``img_trunc``, ``f``, ``delta``, ``img_split``; optionally ``ws_trunc_layers`` and
            ``img_trunc_layers``).
        split_res: the F/W+ base resolution of ``f``.

    Returns:
        Name -> max abs difference, plus ``max_abs_image`` (the official image's largest value).
    """
    # fresh (aligned) copies: tensors read from a safetensors file can sit at unaligned addresses, and the
    # CPU kernels round differently there (1e-5 at 32 px measured), which would be charged to the loader
    t = {k: v.clone() for k, v in t.items()}

    def diff(a, b):
        return float((a.float() - b.float()).abs().max())

    w = gen.mapping(t["z"])
    f = gen.features(t["ws"], split_res)
    out = {"mapping": diff(w, t["w"]), "img_z": diff(gen(t["z"]), t["img_z"]),
           "img_ws": diff(gen.synthesis(t["ws"]), t["img_ws"]),
           "w_trunc": diff(gen.mapping(t["z"], truncation_psi=0.7), t["w_trunc"]),
           "img_trunc": diff(gen.synthesis(t["w_trunc"][:, None].expand(-1, gen.num_ws, -1).contiguous()),
                             t["img_trunc"]),
           "features": diff(f, t["f"]),
           "img_split": diff(gen.synthesis_from(t["f"] + t["delta"], t["ws"], split_res), t["img_split"]),
           "max_abs_image": float(t["img_ws"].abs().max())}
    if "img_trunc_layers" in t:  # truncation of the first layers only (genforce's trunc_layers)
        layers = int(t["trunc_layers"])
        if hasattr(gen, "truncate"):
            ws = gen.truncate(w, 0.7, layers)
        else:
            ws = w[:, None].repeat(1, gen.num_ws, 1)
            ws[:, :layers] = gen.w_avg + 0.7 * (ws[:, :layers] - gen.w_avg)
        out["ws_trunc_layers"] = diff(ws, t["ws_trunc_layers"])
        out["img_trunc_layers"] = diff(gen.synthesis(ws), t["img_trunc_layers"])
    return out
