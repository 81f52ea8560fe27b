"""Reference for attr-gain / attr-drift: the attribute net on the ground-truth edits of edits_synth (aligned).

    .venv/bin/python docs/edits/gt_attr_gain.py [RUN_DIR]     # CPU, about 10 s

Rebuilds the run's 50 `synthetic:50` items (seed 0) and edits, renders G(w) and G(w + a n), and scores them
with the same attribute net and the same formulas as bench.editing (gain of the edited attribute signed by
the strength; mean |change| of the others), from G(w) instead of a method's reconstruction: what a perfect
inversion followed by the ground-truth edit would score on aligned images. With RUN_DIR, checks that the
rebuilt G(w) of the first item matches the run's saved input sample.
"""

import sys

import numpy as np
import torch
from PIL import Image

from bench.config import RunConfig
from bench.runner import prepare

EDITS = ("age:-2..2/5", "smile:-2..2/5")


def main() -> None:
    """Print the ground-truth attr-gain and attr-drift per edit and their mean over the edits."""
    cfg = RunConfig(methods="w", data="synthetic:50", n=50, seed=0, device="cpu", edits=EDITS, perceptual="none")
    prep = prepare(cfg, log=lambda m: None)
    g, net, attrs = prep.generator, prep.attribute_net, list(prep.attributes)
    ws = torch.stack([it.latent for it in prep.items])[:, None].expand(-1, g.num_ws, -1)
    with torch.no_grad():
        base = g.synthesis(ws).clamp(-1, 1)
        if len(sys.argv) > 1:
            saved = Image.open(f"{sys.argv[1]}/samples/identity/{prep.items[0].id}__input.png").convert("RGB")
            mine = (base[0].permute(1, 2, 0).numpy() + 1) * 127.5
            print(f"max |G(w) - saved input| of {prep.items[0].id}: {np.abs(mine - np.asarray(saved)).max():.2f} / 255")
        before = torch.sigmoid(net(base))[:, : len(attrs)]
        gains, drifts = [], []
        for job in prep.edits:
            edited = g.synthesis(ws + job.direction.offset(g.num_ws, job.strength).to(ws)).clamp(-1, 1)
            delta = torch.sigmoid(net(edited))[:, : len(attrs)] - before
            a = attrs.index(job.direction.name)
            gains.append(float((delta[:, a] * np.sign(job.strength)).mean()))
            drifts.append(float(torch.cat([delta[:, :a], delta[:, a + 1 :]], 1).abs().mean()))
            print(f"{job.label:>9}: attr-gain {gains[-1]:.3f}  attr-drift {drifts[-1]:.3f}")
    print(f"mean over {len(gains)} edits: attr-gain {np.mean(gains):.3f}  attr-drift {np.mean(drifts):.3f}")


if __name__ == "__main__":
    main()
