"""``bench make-set``: write a transformed set (images, masks, parameters) that other tools can read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from bench.config import RunConfig
from bench.data.sets import SetRecord, safe_name, write_set
from bench.results import versions
from bench.runner import prepare
from transforms import apply_transform
from transforms import sample_params as sample_transform


def make_set(config: RunConfig, out_dir: Path, log: Callable[[str], None] = print, batch: int = 64) -> int:
    """Transform every item of ``config.data`` with every transform of ``config``; returns the image count."""
    prep = prepare(config, log)
    res = prep.generator.resolution
    records = []
    for spec in prep.specs:
        for k in range(0, len(prep.items), batch):
            chunk = prep.items[k : k + batch]
            params = [sample_transform(spec, seed=it.seed, resolution=res, fill=prep.config.fill) for it in chunk]
            out = apply_transform(torch.stack([it.image for it in chunk]), params)
            for i, (it, p) in enumerate(zip(chunk, params, strict=True)):
                records.append(SetRecord(id=f"{safe_name(it.id)}__{safe_name(spec.label)}", image=out.image[i],
                                         mask=out.mask[i], transform={**p.to_dict(), "source_item": it.id}))
    info = {"config": prep.config.to_dict(), **versions(torch.device("cpu"), **prep.descriptions)}
    write_set(out_dir, records, info=info)
    return len(records)
