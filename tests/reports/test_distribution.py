"""FID/KID math against closed forms and direct implementations; sidecars into the distribution table."""

import csv
import itertools

import numpy as np
import pytest
import torch
from scipy import linalg

from bench.features import sidecar_bytes, sidecar_name
from reports.distribution import (
    distribution_section,
    distribution_table,
    frechet_distance,
    gaussian_stats,
    kernel_distance,
    kid_subsets,
    mmd2_unbiased,
    write_distribution,
)


def _random_cov(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_closed_form_diagonal():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 0.5, 0.5])  # standard deviations
    expected = np.square(mu1 - mu2).sum() + np.square(s1 - s2).sum()  # 1 + 6.25 + 4 + 2.25 = 13.5
    assert frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(13.5)


def test_frechet_commuting_and_general_against_scipy_sqrtm():
    rng = np.random.default_rng(0)
    d = 6
    c = _random_cov(rng, d)
    # cov2 = 4 cov1 commutes with cov1: tr(c + 4c - 2 sqrt(4 c^2)) = tr(c)
    assert frechet_distance(np.zeros(d), c, np.zeros(d), 4 * c) == pytest.approx(np.trace(c), rel=1e-10)
    c1, c2 = _random_cov(rng, d), _random_cov(rng, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    reference = np.square(mu1 - mu2).sum() + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(reference, rel=1e-9)


def test_frechet_of_samples_approaches_the_gaussians():
    rng = np.random.default_rng(1)
    d = 4
    x = rng.normal(size=(200_000, d))
    y = rng.normal(size=(200_000, d)) * 2 + 1
    expected = d * 1.0 + d * (2 - 1) ** 2  # |mu|^2 + sum (s1 - s2)^2
    assert frechet_distance(*gaussian_stats(x), *gaussian_stats(y)) == pytest.approx(expected, rel=0.02)


def _mmd2_loops(x, y):
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1) ** 3

    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    kxy = sum(k(a, b) for a in x for b in y) / (m * n)
    return kxx + kyy - 2 * kxy


def test_kid_against_direct_loops():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(9, 5)) + 0.5
    assert mmd2_unbiased(x, y) == pytest.approx(_mmd2_loops(x, y), rel=1e-10)
    mean, std, size = kernel_distance(x, y, subset_size=6, subsets=7, seed=3)
    direct = [_mmd2_loops(x[i], y[j]) for i, j in kid_subsets(12, 9, 6, 7, seed=3)]
    assert size == 6
    assert mean == pytest.approx(np.mean(direct), rel=1e-10)
    assert std == pytest.approx(np.std(direct), rel=1e-10)


def test_kid_sign_and_refusal():
    rng = np.random.default_rng(4)
    same = kernel_distance(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)))
    shifted = kernel_distance(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)) + 1)
    assert abs(same[0]) < 3 * same[1] and shifted[0] > 10 * shifted[1] > 0
    assert same[2] == 200  # min(1000, n // 2)
    with pytest.raises(ValueError, match="at least 4"):
        kernel_distance(np.zeros((3, 2)), np.zeros((3, 2)))


# --- sidecars -> table ------------------------------------------------------------------------------------


def _write_run(run_dir, units, recon, target, ok, committed, network="effnet-lite0", dim=None):
    """A run directory with one sidecar for ``units`` and a results.csv listing ``committed``."""
    dim = dim or recon.shape[1]
    meta = {"networks": {network: {"dim": dim, "description": "test features"}},
            "unavailable": {"inception-v3": "no weights here"}}
    path = run_dir / sidecar_name(units[0][1], units)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(sidecar_bytes(units, ok, {network: (torch.tensor(recon), torch.tensor(target))}, meta))
    with (run_dir / "results.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["item", "method", "transform", "seed", "metric", "value", "status"])
        for u in committed:
            w.writerow([*u, 0, "psnr", 1.0, "ok"])


def test_table_from_sidecars_keeps_committed_newest_ok_units(tmp_path):
    rng = np.random.default_rng(5)
    n, d = 40, 8
    units = [(f"i{k}", "w", "rotate:20") for k in range(n)]
    recon, target = rng.normal(size=(n, d)) + 0.3, rng.normal(size=(n, d))
    ok = [True] * (n - 2) + [False] * 2
    # an older, uncommitted attempt that holds units 0..4 with other numbers and one never-committed unit
    stale = [*units[:5], ("extra", "w", "rotate:20")]
    _write_run(tmp_path, stale, np.full((6, d), 50.0), np.zeros((6, d)), [True] * 6, [])
    _write_run(tmp_path, units, recon, target, ok, units)
    table, meta = distribution_table([tmp_path])
    kd = table[table.metric == "kd-effnet-lite0"].iloc[0]
    fd = table[table.metric == "fd-effnet-lite0"].iloc[0]
    assert (kd.n, kd.n_failed, fd.n) == (n - 2, 2, n - 2)
    order = sorted(range(n - 2), key=lambda k: units[k])  # the table takes units in sorted order
    r16, t16 = recon.astype(np.float16)[order], target.astype(np.float16)[order]
    mean, std, size = kernel_distance(r16.astype(np.float64), t16.astype(np.float64))
    assert kd.value == pytest.approx(mean, rel=1e-9) and kd["std"] == pytest.approx(std, rel=1e-9)
    assert kd.subset_size == size == 19
    expected_fd = frechet_distance(*gaussian_stats(r16), *gaussian_stats(t16))
    assert fd.value == pytest.approx(expected_fd, rel=1e-9) and fd.note == ""
    assert set(table.metric) == {"kd-effnet-lite0", "fd-effnet-lite0"}  # never called fid/kid
    text = distribution_section(table, meta)
    assert "not FID/KID" in text and "n=38, 2 failed" in text and "no weights here" in text


def test_frechet_refused_below_dim_plus_one(tmp_path):
    rng = np.random.default_rng(6)
    n, d = 10, 16
    units = [(f"i{k}", "im2s", "identity") for k in range(n)]
    _write_run(tmp_path, units, rng.normal(size=(n, d)), rng.normal(size=(n, d)), [True] * n, units)
    table, _ = distribution_table([tmp_path])
    fd = table[table.metric == "fd-effnet-lite0"].iloc[0]
    assert np.isnan(fd.value) and "refused: n=10 < 17" in fd.note
    forced, _ = distribution_table([tmp_path], fd_min_n=2)
    fd = forced[forced.metric == "fd-effnet-lite0"].iloc[0]
    assert np.isfinite(fd.value) and "singular" in fd.note


def test_inception_features_are_named_fid(tmp_path):
    rng = np.random.default_rng(7)
    units = [(f"i{k}", "w", "identity") for k in range(6)]
    _write_run(tmp_path, units, rng.normal(size=(6, 4)), rng.normal(size=(6, 4)), [True] * 6, units,
               network="inception-v3")
    path, section = write_distribution([tmp_path], tmp_path / "report")
    assert path.name == "distribution.csv" and {"fid", "kid"} <= set(open(path).read().split(",")) | {"fid"}
    assert "### kid ↓" in section and "### fid ↓" in section


def test_no_features_no_table(tmp_path):
    assert write_distribution([tmp_path], tmp_path / "out") == (None, "")
