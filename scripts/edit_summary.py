"""Editing metrics of a run, per method, averaged over every edit: aligned vs transformed, and per family.

    .venv/bin/python scripts/edit_summary.py RUN_DIR [--direction smile] [--csv OUT.csv]

Reads only ``RUN_DIR/results.csv`` and ``RUN_DIR/transforms.csv`` (any run made with ``--edit``). For each
item, method and transform, a metric ``edit[LABEL]/KIND`` is first averaged over the run's edits (every
direction and strength, or one direction with ``--direction``), then over the transforms of a group:

- ``aligned``: the identity;
- ``transformed``: every other transform of the run (each item's mean over them);
- ``translation``, ``rotation``, ``scale``: the transforms of one family (from ``transforms.csv``).

A cell is mean ± std over items (sample std), from ``ok`` rows only. Prints one Markdown table per kind.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from reports.figures import transform_magnitudes

KINDS = {
    "psnr": "PSNR of the edit vs the ground-truth edit T(G(w + a n)), dB ↑ (synthetic sources only)",
    "psnr@valid": "the same on the transform's valid pixels, dB ↑",
    "consistency-psnr": "PSNR of the edit of T(x) vs T(the edit of x) by the same method, dB ↑",
    "consistency-psnr@valid": "the same on the valid pixels, dB ↑",
    "attr-gain": "attribute net: change of the edited attribute, signed by the strength ↑",
    "attr-drift": "attribute net: mean |change| of the other attributes ↓",
}
EDIT_METRIC = r"^edit\[(?P<label>[^\]]+)\]/(?P<kind>.+)$"
FAMILIES = ("translation", "rotation", "scale")


def load_edit_rows(run_dir: Path, direction: str | None = None) -> pd.DataFrame:
    """Long rows ``item, method, transform, label, kind, value`` of the edit metrics in ``KINDS`` (ok rows)."""
    df = pd.read_csv(run_dir / "results.csv", dtype={"item": str, "method": str, "transform": str, "status": str},
                     keep_default_na=False, na_values=[""])
    df = df[df["metric"].str.startswith("edit[") & (df["status"] == "ok")]
    df = df.join(df["metric"].str.extract(EDIT_METRIC))
    df = df[df["kind"].isin(list(KINDS))]
    if direction is not None:
        df = df[df["label"].str.rsplit(":", n=1).str[0] == direction]
    if df.empty:
        raise SystemExit(f"{run_dir}: no edit metrics {list(KINDS)}" + (f" for {direction!r}" if direction else ""))
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df[["item", "method", "transform", "label", "kind", "value"]]


def transform_groups(run_dir: Path, transforms: list[str]) -> dict[str, list[str]]:
    """``{group: transforms}`` for aligned, transformed and each family present."""
    family = {t: f for t, (f, _) in transform_magnitudes(run_dir).items()}
    groups = {"aligned": [t for t in transforms if t == "identity" or family.get(t) == "identity"]}
    groups["transformed"] = [t for t in transforms if t not in groups["aligned"]]
    for name in FAMILIES:
        groups[name] = [t for t in transforms if family.get(t) == name]
    return {g: ts for g, ts in groups.items() if ts}


def summarise(rows: pd.DataFrame, groups: dict[str, list[str]]) -> pd.DataFrame:
    """``kind, method, group, mean, std, n`` (n = items); methods in run order."""
    per_edit = rows.groupby(["kind", "method", "transform", "item"], sort=False)["value"].mean().reset_index()
    parts = []
    for group, transforms in groups.items():
        sel = per_edit[per_edit["transform"].isin(transforms)]
        per_item = sel.groupby(["kind", "method", "item"], sort=False)["value"].mean()
        stats = per_item.groupby(["kind", "method"], sort=False).agg(["mean", "std", "count"]).reset_index()
        parts.append(stats.assign(group=group).rename(columns={"count": "n"}))
    out = pd.concat(parts, ignore_index=True)
    return out[["kind", "method", "group", "mean", "std", "n"]]


def _cell(mean: float, std: float, decimals: int) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.{decimals}f}" + ("" if math.isnan(std) else f" ± {std:.{decimals}f}")


def to_markdown(summary: pd.DataFrame, methods: list[str], groups: list[str]) -> str:
    """One table per kind: rows methods, columns groups."""
    out = []
    for kind, text in KINDS.items():
        part = summary[summary["kind"] == kind].set_index(["method", "group"])
        if part.empty:
            continue
        decimals = 2 if "psnr" in kind else 3
        out.append(f"**{kind}**: {text}\n\n| method | " + " | ".join(groups) + " |\n|:---" + "|---:" * len(groups)
                   + "|\n")
        for method in methods:
            cells = [_cell(*part.loc[(method, g), ["mean", "std"]], decimals) if (method, g) in part.index else "–"
                     for g in groups]
            out.append(f"| {method} | " + " | ".join(cells) + " |\n")
        out.append("\n")
    return "".join(out)


def main(argv: list[str] | None = None) -> None:
    """Command line: print the Markdown tables (and optionally write the numbers as CSV)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--direction", help="only this edit direction (e.g. smile); default: every edit")
    parser.add_argument("--csv", type=Path, help="also write kind, method, group, mean, std, n here")
    args = parser.parse_args(argv)
    rows = load_edit_rows(args.run_dir, args.direction)
    transforms = list(pd.unique(rows["transform"]))
    groups = transform_groups(args.run_dir, transforms)
    summary = summarise(rows, groups)
    labels = list(pd.unique(rows["label"]))
    print(f"{args.run_dir}: mean over {len(labels)} edits ({', '.join(labels)}), then over the transforms of "
          f"each group ({'; '.join(f'{g}: ' + ', '.join(ts) for g, ts in groups.items())}); "
          f"mean ± std over items.\n")
    print(to_markdown(summary, list(pd.unique(rows["method"])), list(groups)), end="")
    if args.csv:
        summary.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
