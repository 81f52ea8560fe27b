"""How a run's transformed targets were made, per transform column (from ``transforms.csv``).

``bench.targets`` records for every (item, transform) whether its target was rendered directly
(``render``: procedural faces, no resampling) or warped (``bilinear``, ``bicubic``, ``lanczos3``), and its
high-frequency energy ratio to the aligned image (``transforms.sharpness``; about 1 when nothing was blurred,
0.4-0.6 for a bilinear warp at 64 px). Runs written before these columns existed say "not recorded".
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path


def target_summary(run_dir: str | Path) -> dict[str, tuple[str, float, int]]:
    """Per transform label: (how the targets were made, mean HF ratio, items), in table order."""
    path = Path(run_dir) / "transforms.csv"
    if not path.is_file():
        return {}
    made: dict[str, set[str]] = defaultdict(set)
    ratios: dict[str, list[float]] = defaultdict(list)
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            label = row.get("transform", "")
            made[label].add(row.get("target") or "not recorded")
            try:
                value = float(row.get("hf_ratio") or "nan")
            except ValueError:
                value = float("nan")
            if math.isfinite(value):
                ratios[label].append(value)
    out = {}
    for label, kinds in made.items():
        values = ratios[label]
        out[label] = ("/".join(sorted(kinds)), sum(values) / len(values) if values else float("nan"), len(values))
    return out


def targets_line(run_dir: str | Path) -> str:
    """``identity: identity; T50: render, HF ratio 0.98; ...`` (empty when the run has no transforms.csv)."""
    parts = []
    for label, (how, ratio, _) in target_summary(run_dir).items():
        parts.append(f"{label}: {how}" + (f", HF ratio {ratio:.2f}" if how != "identity" and math.isfinite(ratio)
                                          else ""))
    return "; ".join(parts)
