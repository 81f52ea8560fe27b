"""Table 1 PSNR of protocol runs beside BDInvert's published numbers (Markdown, for the docs).

    python scripts/beside_paper.py RUN_DIR [RUN_DIR ...] [--metric psnr] [--items N]

Each method's row is the mean over the run's items of the metric (whole image, as the paper's PSNR), one
column per transform label of the ``bdinvert-table1`` protocol, followed (for ``psnr``) by the paper's row in italics
(BDInvert, ICCV 2021, Table 1; ``shared/reference/protocol.md``). Several run directories are read as one
table (e.g. methods run in separate calls); a (method, transform) cell found in two runs is refused.
``--items N`` keeps the first N item ids (to compare runs of different sizes on the same faces). On the
256 px world ``fwplus16`` runs a 4x4 base code, the paper's 16x16 proportion, and is labelled so.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reports import load_results

COLUMNS = ("identity", "T50", "T100", "T150", "R10", "R20", "R30", "S7/8", "S3/4", "S9/8", "S5/4")
PAPER = {  # BDInvert Table 1, PSNR (dB), FFHQ 1024 StyleGAN2 on CelebA-HQ, 50 images
    "im2s": (25.63, 25.06, 24.53, 23.92, 25.76, 24.65, 23.87, 25.82, 25.25, 26.17, 26.27),
    "pnorm": (21.79, 20.94, 19.78, 18.54, 20.70, 18.91, 17.93, 21.53, 19.41, 22.07, 21.85),
    "w": (18.73, 18.29, 17.31, 16.71, 17.95, 17.22, 16.02, 18.65, 18.43, 19.12, 19.43),
    "psp": (20.54, 19.03, 17.59, 16.50, 19.14, 17.78, 16.99, 19.02, 17.78, 20.63, 20.15),
    "fwplus8": (23.69, 23.35, 23.74, 23.50, 23.30, 22.06, 21.35, 23.37, 22.72, 23.93, 24.22),
    "fwplus16": (26.47, 26.30, 26.37, 26.43, 26.48, 26.49, 26.33, 26.44, 26.28, 26.98, 27.26),
}
LABELS = {"fwplus8": "F/W+ 8×8", "fwplus16": "F/W+ 16×16", "im2s": "Im2S (W+)", "pnorm": "P-norm+ (W+)",
          "w": "W projector", "idinvert": "IDinvert", "psp": "pSp"}
ORDER = ("fwplus8", "fwplus16", "im2s", "pnorm", "w", "idinvert", "psp")


def base_sizes(run_dirs: list[Path]) -> dict[str, str]:
    """Per F/W+ method, its base code as recorded in the runs' ``config.json`` (e.g. ``4x4 x 256 ch: ...``)."""
    out = {}
    for d in run_dirs:
        for name, entry in (json.loads((d / "config.json").read_text()).get("method_settings") or {}).items():
            if entry.get("base_code"):
                out[name] = entry["base_code"]
    return out


def table(run_dirs: list[Path], metric: str = "psnr", items: int | None = None) -> str:
    """The Markdown table: each method's mean per column, then the paper's row where it has one."""
    df = load_results(run_dirs)
    df = df[(df["metric"] == metric) & (df["status"] == "ok")]
    if items is not None:
        df = df[df["item"].isin(sorted(df["item"].unique())[:items])]
    cells = df.groupby(["method", "transform"])["run"].nunique()
    if (cells > 1).any():
        raise SystemExit(f"cells found in more than one run: {list(cells[cells > 1].index)[:4]}")
    means = df.groupby(["method", "transform"])["value"].agg(["mean", "count"])
    bases = base_sizes(run_dirs)
    head = "| method | " + " | ".join("0" if c == "identity" else c for c in COLUMNS) + " |"
    lines = [head, "|:---|" + "---:|" * len(COLUMNS)]
    for m in [m for m in ORDER if m in means.index.get_level_values(0)]:
        label = LABELS[m] + (f" ({bases[m].split(' x ')[0]} base)" if m in bases else "")
        vals = [f"{means.loc[(m, c), 'mean']:.2f}" if (m, c) in means.index else "–" for c in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(vals) + " |")
        if m in PAPER and metric == "psnr":
            lines.append("| *paper* | " + " | ".join(f"*{v:.2f}*" for v in PAPER[m]) + " |")
    n = sorted(set(means["count"].tolist()))
    return "\n".join(lines) + f"\n\n(items per cell: {', '.join(map(str, n))}; metric `{metric}`, mean over items)\n"


def main() -> None:
    """Print the table for the run directories on the command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="+", type=Path)
    ap.add_argument("--metric", default="psnr")
    ap.add_argument("--items", type=int, default=None, help="only the first N item ids")
    a = ap.parse_args()
    print(table(a.run_dirs, a.metric, a.items))


if __name__ == "__main__":
    main()
