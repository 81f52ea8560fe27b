"""FID/KID per (method, transform) cell from the per-unit feature sidecars of a run.

What is compared, as in BDInvert's Table 1: the reconstructions of one column (one method under one
transform) against that column's targets (the transformed inputs the method was given), whole images.
Which features: Inception-v3's 2048-d pool features when the run had the weights (then the statistics are
``fid`` and ``kid``), else EfficientNet-Lite0's 1280-d pooled features, whose statistics are named for
that network (``fd-effnet-lite0``, ``kd-effnet-lite0``): they are *not* FID/KID and not comparable with
published FIDs.

- Fréchet distance of Gaussians fitted to the two sets (float64):
  ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)``. It is refused (no value, a note) when
  ``n < dim + 1``: the sample covariance of n points has rank at most n - 1, so below that it is singular
  and the distance depends on n more than on the images (BDInvert's FID over 50 images is of this kind).
- Kernel distance as torch-fidelity computes KID: the unbiased MMD^2 with the cubic polynomial kernel
  ``k(x, y) = (x.y / dim + 1)^3``, averaged over ``KID_SUBSETS`` random subsets of size
  ``min(KID_SUBSET_SIZE, n // 2)`` drawn without replacement (seed 0), with the std over the subsets (the
  spread of one subset's estimate). Unbiased: it can be slightly negative for near-identical sets. Refused
  for n < 4.

This module reads only the run directory (``reports`` imports nothing from ``bench``); the sidecar format
is described in ``bench.features``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import linalg

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_MIN_N = 4
STAT_NAMES = {"inception-v3": ("fid", "kid")}
"""Per feature network, the names of its Fréchet and kernel statistics; others get ``fd-NET`` / ``kd-NET``."""
COLUMNS = ("run", "method", "transform", "metric", "features", "n", "n_failed", "value", "std", "subset_size",
           "subsets", "note")


def stat_names(network: str) -> tuple[str, str]:
    """(Fréchet, kernel) statistic names for a feature network: ``fid``/``kid`` only for Inception-v3."""
    return STAT_NAMES.get(network, (f"fd-{network}", f"kd-{network}"))


# --- the statistics ---------------------------------------------------------------------------------------


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D), float64, of (N, D) features."""
    f = np.asarray(features, dtype=np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    w, v = linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2), squared, as FID defines it.

    ``tr((cov1 cov2)^1/2)`` is computed as ``tr((s cov2 s)^1/2)`` with ``s = cov1^1/2`` (symmetric PSD
    square roots by eigendecomposition), which equals it for PSD matrices and has no complex round-off.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(cov1).astype(np.float64), np.atleast_2d(cov2).astype(np.float64)
    s1 = _sqrtm_psd(cov1)
    cross = np.sqrt(np.clip(linalg.eigvalsh(s1 @ cov2 @ s1), 0, None)).sum()
    return float(np.square(mu1 - mu2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * cross)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(x @ y.T / dim + 1) ** 3``: KID's kernel (degree 3, gamma 1/dim, coef0 1), float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two (m, D) sets under :func:`polynomial_kernel` (diagonals of k_xx, k_yy excluded)."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kid_subsets(n_x: int, n_y: int, subset_size: int, subsets: int = KID_SUBSETS,
                seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (x indices, y indices) of each subset: drawn without replacement, ``numpy.random.RandomState(seed)``."""
    rng = np.random.RandomState(seed)
    return [(rng.choice(n_x, subset_size, replace=False), rng.choice(n_y, subset_size, replace=False))
            for _ in range(subsets)]


def kernel_distance(x: np.ndarray, y: np.ndarray, subset_size: int | None = None, subsets: int = KID_SUBSETS,
                    seed: int = 0) -> tuple[float, float, int]:
    """KID: mean and std of :func:`mmd2_unbiased` over random subsets; returns (mean, std, subset size).

    Args:
        x: (N, D) features of one set.
        y: (M, D) features of the other.
        subset_size: Default ``min(KID_SUBSET_SIZE, min(N, M) // 2)``.
        subsets: Number of subsets.
        seed: Seed of the subset draws.

    Raises:
        ValueError: If a set has fewer than ``KID_MIN_N`` rows or the subset size is not in [2, min(N, M)].
    """
    n = min(len(x), len(y))
    if n < KID_MIN_N:
        raise ValueError(f"KID needs at least {KID_MIN_N} images per set, got {len(x)} and {len(y)}")
    size = min(KID_SUBSET_SIZE, n // 2) if subset_size is None else subset_size
    if not 2 <= size <= n:
        raise ValueError(f"KID subset size {size} must be in [2, {n}]")
    values = np.array([mmd2_unbiased(x[i], y[j]) for i, j in kid_subsets(len(x), len(y), size, subsets, seed)])
    return float(values.mean()), float(values.std()), size


# --- reading the sidecars ---------------------------------------------------------------------------------


@dataclass
class CellFeatures:
    """Features of the ok units of one (method, transform) cell, per network."""

    recon: dict[str, list[np.ndarray]]
    target: dict[str, list[np.ndarray]]
    n_failed: int = 0


def read_sidecars(run_dir: Path) -> tuple[dict[tuple[str, str, str], dict], dict]:
    """Every unit's newest sidecar entry, and the networks' metadata (descriptions and unavailable reasons)."""
    units: dict[tuple[str, str, str], dict] = {}
    meta: dict = {"networks": {}, "unavailable": {}}
    for path in sorted(Path(run_dir).glob("**/features/*/*.npz")):
        with np.load(path, allow_pickle=False) as data:
            written = int(data["written_ns"])
            info = json.loads(str(data["meta"]))
            nets = list(info.get("networks", {}))
            for i, key in enumerate(zip(data["item"], data["method"], data["transform"], strict=True)):
                key = tuple(str(k) for k in key)
                if key in units and units[key]["written_ns"] >= written:
                    continue
                units[key] = {"written_ns": written, "ok": bool(data["ok"][i]),
                              "recon": {n: data[f"recon__{n}"][i] for n in nets},
                              "target": {n: data[f"target__{n}"][i] for n in nets}}
        meta["networks"] |= info.get("networks", {})
        meta["unavailable"] |= info.get("unavailable", {})
    return units, meta


def _committed_units(run_dir: Path) -> set[tuple[str, str, str]]:
    path = Path(run_dir) / "results.csv"
    if not path.is_file():
        return set()
    rows = pd.read_csv(path, usecols=["item", "method", "transform"], dtype=str, keep_default_na=False)
    return set(rows.itertuples(index=False, name=None))


def cell_features(run_dirs: Sequence[Path]) -> tuple[dict[tuple[str, str], CellFeatures], dict]:
    """Per (method, transform): the features of its committed ok units (several runs pooled), and the metadata."""
    cells: dict[tuple[str, str], CellFeatures] = {}
    meta: dict = {"networks": {}, "unavailable": {}}
    for run_dir in run_dirs:
        units, info = read_sidecars(run_dir)
        meta["networks"] |= info["networks"]
        meta["unavailable"] |= info["unavailable"]
        committed = _committed_units(run_dir)
        for key, entry in sorted(units.items()):
            if key not in committed:
                continue  # an attempt whose batch was never committed
            cell = cells.setdefault(key[1:], CellFeatures({}, {}))
            if not entry["ok"]:
                cell.n_failed += 1
                continue
            for net in entry["recon"]:
                cell.recon.setdefault(net, []).append(entry["recon"][net])
                cell.target.setdefault(net, []).append(entry["target"][net])
    return cells, meta


# --- the table --------------------------------------------------------------------------------------------


def _cell_rows(method: str, transform: str, cell: CellFeatures, fd_min_n: int | None) -> list[dict]:
    rows = []
    n_units = max((len(v) for v in cell.recon.values()), default=0)
    for net in sorted(cell.recon):
        x, y = np.stack(cell.recon[net]).astype(np.float64), np.stack(cell.target[net]).astype(np.float64)
        n, dim = len(x), x.shape[1]
        partial = f"features of {n} of the {n_units} ok units only; " if n < n_units else ""
        fd_name, kd_name = stat_names(net)
        base = {"method": method, "transform": transform, "features": net, "n": n, "n_failed": cell.n_failed}
        need = dim + 1 if fd_min_n is None else fd_min_n
        if n >= need and n >= 2:
            fd = frechet_distance(*gaussian_stats(x), *gaussian_stats(y))
            note = "" if n > dim else (f"covariance singular (n={n} <= dim {dim}): biased, depends on n; "
                                       "not comparable across sample sizes")
            rows.append(base | {"metric": fd_name, "value": fd, "note": partial + note})
        else:
            rows.append(base | {"metric": fd_name, "value": float("nan"),
                                "note": partial + f"refused: n={n} < {need} (= feature dim {dim} + 1; below it the "
                                        "covariance is singular); see " + kd_name})
        if n >= KID_MIN_N:
            mean, std, size = kernel_distance(x, y)
            rows.append(base | {"metric": kd_name, "value": mean, "std": std, "subset_size": size,
                                "subsets": KID_SUBSETS, "note": partial + ("small set: high variance"
                                                                           if n < 50 else "")})
        else:
            rows.append(base | {"metric": kd_name, "value": float("nan"),
                                "note": partial + f"refused: n={n} < {KID_MIN_N}"})
    return rows


def distribution_table(run_dirs: Sequence[str | Path], names: Sequence[str] | None = None, *, pool: bool = False,
                       fd_min_n: int | None = None) -> tuple[pd.DataFrame, dict]:
    """FID/KID (or their EfficientNet-Lite0 counterparts) per (method, transform) cell.

    Args:
        run_dirs: Run directories.
        names: Run names for the ``run`` column (default: the folder names).
        pool: Pool the runs' units into one cell per (method, transform) (``run`` is then empty).
        fd_min_n: Smallest n for the Fréchet distance; default ``dim + 1`` (a full-rank covariance). A smaller
            value gives singular-covariance numbers like the paper's 50-image FID, flagged in ``note``.

    Returns:
        The table (columns ``COLUMNS``; ``std``, ``subset_size``, ``subsets`` only for the kernel statistic)
        and the feature metadata (``networks``: descriptions; ``unavailable``: reasons).
    """
    dirs = [Path(d) for d in run_dirs]
    names = list(names) if names is not None else [d.name for d in dirs]
    groups = [("", dirs)] if pool else [(n, [d]) for n, d in zip(names, dirs, strict=True)]
    rows, meta = [], {"networks": {}, "unavailable": {}}
    for name, group in groups:
        cells, info = cell_features(group)
        meta["networks"] |= info["networks"]
        meta["unavailable"] |= info["unavailable"]
        for (method, transform), cell in cells.items():
            rows += [r | {"run": name} for r in _cell_rows(method, transform, cell, fd_min_n)]
    return pd.DataFrame(rows, columns=list(COLUMNS)), meta


def _fmt(value: float, std: float | None) -> str:
    if not np.isfinite(value):
        return "refused"
    text = f"{value:.4g}"
    return text + (f" ± {std:.2g}" if std is not None and np.isfinite(std) else "")


def distribution_section(table: pd.DataFrame, meta: dict) -> str:
    """The report's Markdown section: one table per statistic (methods x transforms), n per cell, the notes."""
    out = ["## Distribution (FID/KID)\n\n",
           "Each cell compares a column's reconstructions with its targets (the transformed inputs), whole images, "
           "as BDInvert's Table 1 does. Lower is better (↓).\n\n"]
    for net, info in sorted(meta.get("networks", {}).items()):
        fd_name, kd_name = stat_names(net)
        out.append(f"- `{fd_name}`, `{kd_name}`: {info.get('description', net)}"
                   + ("; **not FID/KID** (not Inception-v3): not comparable with published FIDs" if net not in
                      STAT_NAMES else "") + "\n")
    for net, reason in sorted(meta.get("unavailable", {}).items()):
        out.append(f"- {net}: unavailable: {reason}\n")
    if table.empty:
        return "".join(out) + "\nNo features were recorded for any committed unit.\n\n"
    out.append("\n")
    for metric, rows in table.groupby("metric", sort=True):
        transforms = list(dict.fromkeys(rows["transform"]))
        out.append(f"### {metric} ↓\n\n| method | " + " | ".join(transforms) + " |\n|---|"
                   + "---:|" * len(transforms) + "\n")
        several = rows["run"].nunique() > 1
        keyed = rows.assign(label=rows["method"] + " [" + rows["run"] + "]" if several else rows["method"])
        for label, r in keyed.groupby("label", sort=False):
            cells = {t.transform: f"{_fmt(t.value, t.std if metric.startswith(('kd', 'kid')) else None)} "
                                  f"(n={t.n}{f', {t.n_failed} failed' if t.n_failed else ''})"
                     for t in r.itertuples(index=False)}
            out.append(f"| {label} | " + " | ".join(cells.get(t, "") for t in transforms) + " |\n")
        notes = sorted({str(n) for n in rows["note"] if isinstance(n, str) and n})
        out.append("\n" + "".join(f"- {n}\n" for n in notes) + "\n")
    return "".join(out)


def write_distribution(run_dirs: Sequence[str | Path], out_dir: str | Path, names: Sequence[str] | None = None,
                       *, pool: bool = False, fd_min_n: int | None = None) -> tuple[Path | None, str]:
    """Write ``distribution.csv`` into ``out_dir``; returns its path (None when no run has features) and the section.

    Runs written before feature sidecars existed (no ``features/`` folder) give ``(None, "")``.
    """
    dirs = [Path(d) for d in run_dirs]
    if not any(any(d.glob("**/features/*/*.npz")) for d in dirs):
        return None, ""
    table, meta = distribution_table(dirs, names, pool=pool, fd_min_n=fd_min_n)
    path = Path(out_dir) / "distribution.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, float_format="%.6g")
    return path, distribution_section(table, meta)
