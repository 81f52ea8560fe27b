"""Largest per-row differences between run directories' results.csv (device runs of scripts/gpu_session7.sh).

``python scripts/compare_runs.py OUT.json REF RUN [RUN ...]`` compares each RUN with REF on the same
(method, transform, item, seed, metric) rows: per metric the largest absolute difference, and for PSNR the
largest and mean absolute difference per (method, transform). Prints and writes the JSON.
"""

import json
import sys

import pandas as pd

KEY = ["method", "transform", "item", "seed", "metric"]


def load(run: str) -> pd.Series:
    """A run's values indexed by :data:`KEY`."""
    return pd.read_csv(f"{run}/results.csv").set_index(KEY)["value"].sort_index()


def compare(ref: pd.Series, other: pd.Series) -> dict:
    """Per metric the largest |difference|; per (method, transform) the PSNR's largest and mean |difference|."""
    d = (ref - other.reindex(ref.index)).abs()
    psnr = d.xs("psnr", level="metric").groupby(level=["method", "transform"]).agg(["max", "mean"])
    return {"same_rows": bool(ref.index.equals(other.index)),
            "max_abs_by_metric": {m: round(float(v), 5) for m, v in d.groupby(level="metric").max().items()},
            "psnr_db_by_cell": {f"{m}/{t}": {"max_abs": round(float(r["max"]), 4),
                                             "mean_abs": round(float(r["mean"]), 4)}
                                for (m, t), r in psnr.iterrows()}}


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
