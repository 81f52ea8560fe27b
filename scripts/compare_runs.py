"""Largest per-row differences between run directories' results.csv (device runs of scripts/gpu_session7.sh).

``python scripts/compare_runs.py OUT.json REF RUN [RUN ...]`` compares each RUN with REF on the same
(method, transform, item, seed, metric) rows: per metric the largest absolute difference, and for PSNR the
largest and mean absolute difference per (method, transform), and per method the mean signed difference
(RUN - REF), the mean and largest absolute one, the largest shift of a column's mean and the rows that
moved by more than 0.1 dB. REF may be several run directories joined by commas (e.g. one per method).
Prints and writes the JSON.
"""

import json
import sys

import pandas as pd

KEY = ["method", "transform", "item", "seed", "metric"]


def load(run: str) -> pd.Series:
    """A run's values indexed by :data:`KEY` (several runs, comma-separated, together)."""
    return pd.concat([pd.read_csv(f"{r}/results.csv") for r in run.split(",")]).set_index(KEY)["value"].sort_index()


def compare(ref: pd.Series, other: pd.Series) -> dict:
    """Per metric the largest |difference|; per (method, transform) the PSNR's largest and mean |difference|."""
    d = (ref - other.reindex(ref.index)).abs()
    psnr = d.xs("psnr", level="metric").groupby(level=["method", "transform"]).agg(["max", "mean"])
    signed = (other.reindex(ref.index) - ref).xs("psnr", level="metric")
    by_method = {}
    for method, s in signed.groupby(level="method"):
        columns = s.groupby(level="transform").mean()
        by_method[method] = {"rows": int(s.count()), "mean": round(float(s.mean()), 4),
                             "mean_abs": round(float(s.abs().mean()), 4), "max_abs": round(float(s.abs().max()), 4),
                             "largest_column_mean_shift": round(float(columns.abs().max()), 4),
                             "rows_over_0.1_db": int((s.abs() > 0.1).sum())}
    return {"same_rows": bool(ref.index.equals(other.index)),
            "max_abs_by_metric": {m: round(float(v), 5) for m, v in d.groupby(level="metric").max().items()},
            "psnr_db_by_cell": {f"{m}/{t}": {"max_abs": round(float(r["max"]), 4),
                                             "mean_abs": round(float(r["mean"]), 4)}
                                for (m, t), r in psnr.iterrows()},
            "psnr_db_by_method": by_method}


def main() -> None:
    """Compare every RUN with REF and write OUT.json."""
    out, ref, *runs = sys.argv[1:]
    base = load(ref)
    result = {f"{ref} vs {run}": compare(base, load(run)) for run in runs}
    print(json.dumps(result, indent=1))
    with open(out, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
