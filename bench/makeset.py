"""``bench make-set``: write a transformed set (images, masks, parameters) that other tools can read.

``--n`` and a count in ``--data`` (``procfaces:100``) are taken literally; without either, the default faces
are the quick profile's 8, and the log says so. The log's header counts what the source found, used and
skipped, and how many images the set will hold (items x transforms).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from bench.config import PROFILES, RunConfig
from bench.data.sets import SetRecord, safe_name, write_set
from bench.dataspec import stated_count
from bench.prepare import Prepared, prepare
from bench.results import versions
from bench.targets import make_targets
from transforms import sample_params as sample_transform


class MakeSetError(ValueError):
    """A make-set request that would write nothing useful."""


def count_origin(config: RunConfig) -> str:
    """Why the set has the number of items it has: ``--n``, the ``--data`` spec, or the default."""
    if config.n is not None:
        return f"--n {config.n}"
    decided, count = stated_count(config.data)
    if decided:
        return f"--data {config.data}" if count is not None else f"all of --data {config.data}"
    if config.data:
        return f"every readable image of --data {config.data}"
    return f"the default {PROFILES['quick']['n']} held-out faces; pass --n N or --data procfaces:N for more"


def header(config: RunConfig, prep: Prepared) -> list[str]:
    """The lines logged before writing: source (found / used / skipped), items and why, transforms, total."""
    labels = ", ".join(s.label for s in prep.specs)
    return [f"data: {prep.descriptions['data']}",
            f"items: {len(prep.items)} ({count_origin(config)})",
            f"transforms: {labels}",
            f"writing {len(prep.items)} items x {len(prep.specs)} transforms = {len(prep.items) * len(prep.specs)} "
            "images"]


def make_set(config: RunConfig, out_dir: Path, log: Callable[[str], None] = print, batch: int = 64) -> int:
    """Transform every item of ``config.data`` with every transform of ``config``; returns the image count.

    Raises:
        MakeSetError: If there is no transform at all (``--no-identity`` without ``--transform``/``--protocol``).
    """
    prep = prepare(config, log)
    if not prep.specs:
        raise MakeSetError("make-set: no transform to apply; pass --transform or --protocol, or keep --identity")
    for line in header(config, prep):
        log(line)
    res = prep.generator.resolution
    records = []
    for spec in prep.specs:
        for k in range(0, len(prep.items), batch):
            chunk = prep.items[k : k + batch]
            params = [sample_transform(spec, seed=it.seed, resolution=res, fill=prep.config.fill) for it in chunk]
            out = make_targets(chunk, params, resample=prep.config.resample)
            for i, (it, p) in enumerate(zip(chunk, params, strict=True)):
                how = {"source_item": it.id, "target": out.made[i], "hf_ratio": round(float(out.hf_ratio[i]), 4)}
                records.append(SetRecord(id=f"{safe_name(it.id)}__{safe_name(spec.label)}", image=out.image[i],
                                         mask=out.mask[i], transform={**p.to_dict(), **how}))
    info = {"config": prep.config.to_dict(), **versions(torch.device("cpu"), **prep.descriptions)}
    write_set(out_dir, records, info=info)
    return len(records)
