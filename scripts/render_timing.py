"""How long a protocol run takes to make its targets, with the renderer's chunking and with another (issue #17).

``python scripts/render_timing.py [--n 50] [--images-per-pass 64]`` makes the targets of every (face,
transform) unit of a ``bdinvert-table1`` run on the 256 px world (``bench.targets.make_targets``, the
runner's path) twice: with the renderer's chunks (``procfaces._CHUNK_SAMPLES``), then with a fixed number of
images per pass at 256 px (64 before session 13), the render cache cleared in between. Prints one JSON line:
both times, whether the targets are the same bit for bit, and the largest difference.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bench import targets
from bench.config import RunConfig
from bench.prepare import prepare
from bench.runner import work_units
from bench.world import procfaces


def main() -> None:
    """Time both chunkings over the protocol's targets."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="faces (x 11 transforms)")
    ap.add_argument("--images-per-pass", type=int, default=64, help="the other chunking, at 256 px")
    a = ap.parse_args()
    prep = prepare(RunConfig(methods="psp", protocol="bdinvert-table1", n=a.n, device="cpu", profile="paper"),
                   log=lambda m: None)
    units = work_units(prep)
    items, params = [u.item for u in units], [u.params for u in units]
    images, seconds = [], []
    for budget in (procfaces._CHUNK_SAMPLES, a.images_per_pass * (256 * procfaces.DEFAULT_SUPERSAMPLE) ** 2):
        targets._render_cache.clear()
        procfaces._CHUNK_SAMPLES = budget
        start = time.perf_counter()
        images.append(targets.make_targets(items, params).image)
        seconds.append(round(time.perf_counter() - start, 1))
    print(json.dumps({"units": len(units), "threads": torch.get_num_threads(), "seconds": seconds[0],
                      f"seconds_at_{a.images_per_pass}_per_pass": seconds[1],
                      "bit_identical": torch.equal(*images),
                      "max_abs_diff": (images[0] - images[1]).abs().max().item()}))


if __name__ == "__main__":
    main()
