import json

import numpy as np
import pandas as pd
import pytest
import torch

from bench.config import RunConfig
from bench.editing import edit_jobs, edit_scores, metric_name
from bench.metrics import build_metrics
from bench.runner import run
from methods import Inversion, build_method
from transforms import parse_transforms, sample_params


def _direction_file(tmp_path, w_dim):
    path = tmp_path / "d.npy"
    np.save(path, np.random.default_rng(0).standard_normal(w_dim).astype(np.float32))
    return path


def test_oracle_inversion_matches_the_ground_truth_edit(tiny_generator, tmp_path):
    """An inversion that recovers the true w must edit exactly into G(w + a n): PSNR at its 100 dB cap."""
    gen = tiny_generator
    w = gen.mapping(torch.randn(3, gen.z_dim, generator=torch.Generator().manual_seed(1)))
    images = gen.synthesis(w[:, None].expand(-1, gen.num_ws, -1)).clamp(-1, 1)
    inv = Inversion("im2s", {"wp": w[:, None].expand(-1, gen.num_ws, -1).clone()}, images, torch.zeros(3),
                    (None, None, None))
    jobs = edit_jobs([f"{_direction_file(tmp_path, gen.w_dim)}:-1.5,2"], gen)
    assert [j.label for j in jobs] == ["d:-1.5", "d:+2"]
    params = [sample_params(parse_transforms("identity")[0], seed=i, resolution=gen.resolution) for i in range(3)]
    metrics = build_metrics(["psnr", "mse"], device="cpu")
    scores, edited = edit_scores(build_method("im2s"), inv, gen, jobs, metrics, w, params,
                                 torch.ones(3, 1, gen.resolution, gen.resolution), torch.ones(3, dtype=torch.bool))
    for job in jobs:
        assert torch.all(scores[metric_name(job, "psnr")] > 99.9)
        assert torch.all(scores[metric_name(job, "mse")] < 1e-9)
        assert not torch.allclose(edited[job.label], images)  # the edit did change the image


def test_run_with_edits_records_and_declares_edit_metrics(tiny_generator_path, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    d = _direction_file(tmp_path, 32)
    cfg = RunConfig(methods="im2s", transforms=("rotate:20",), generator=str(tiny_generator_path),
                    data="synthetic:2", n=2, steps=3, perceptual="none", device="cpu",
                    run_dir=str(tmp_path / "run"), edits=(f"{d}:2",))
    out = run(cfg, progress=False, log=lambda m: None)
    df = pd.read_csv(out / "results.csv")
    declared = json.loads((out / "metrics.json").read_text())
    edit_rows = df[df["metric"].str.startswith("edit[d:+2]/") & ~df["metric"].str.contains("consistency")]
    assert set(edit_rows["metric"]) == {"edit[d:+2]/" + m for m in ("mse", "psnr", "ssim", "mse@valid",
                                                                     "psnr@valid", "ssim@valid")}
    assert len(edit_rows) == 2 * 2 * 6  # items x transforms (identity, rotate:20) x metrics
    consistency = df[df["metric"].str.contains("consistency")]
    assert len(consistency) == 2 * 1 * 6 and set(consistency["transform"]) == {"rotate:20"}
    assert set(df["metric"]) <= set(declared)
    index = pd.read_csv(out / "samples" / "index.csv")
    assert "im2s d:+2" in set(index["kind"])


def test_world_attribute_metrics(tmp_path):
    cfg = RunConfig(methods="im2s", transforms=(), n=2, steps=2, device="cpu", run_dir=str(tmp_path / "run"),
                    edits=("smile:2",), metrics=("psnr",))
    out = run(cfg, progress=False, log=lambda m: None)
    df = pd.read_csv(out / "results.csv")
    gain = df[df["metric"] == "edit[smile:+2]/attr-gain"]["value"]
    drift = df[df["metric"] == "edit[smile:+2]/attr-drift"]["value"]
    assert len(gain) == 2 and len(drift) == 2
    assert gain.mean() > drift.mean()  # the smile direction changes smile more than the rest


@pytest.mark.parametrize("save_latents", [True, False])
def test_consistency_is_perfect_for_a_transform_that_moves_nothing(tiny_generator_path, tmp_path, monkeypatch,
                                                                   save_latents):
    """translate:0,0 is not the identity pass but its warp is exact: im2s (deterministic) inverts and edits
    the same image, so its edit must equal the (un)transformed edit of the aligned image. Consistency is
    scored whether or not the run keeps its latents on disk."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    d = _direction_file(tmp_path, 32)
    cfg = RunConfig(methods="im2s", transforms=("translate:0,0", "rotate:20"), generator=str(tiny_generator_path),
                    data="synthetic:2", n=2, steps=3, perceptual="none", device="cpu", metrics=("psnr",),
                    run_dir=str(tmp_path / "run"), edits=(f"{d}:2",), save_latents=save_latents)
    out = run(cfg, progress=False, log=lambda m: None)
    assert (out / "latents").exists() == save_latents
    df = pd.read_csv(out / "results.csv")
    cons = df[df["metric"] == "edit[d:+2]/consistency-psnr"]
    assert set(cons["transform"]) == {"translate:0,0", "rotate:20"}  # none for the identity pass itself
    still = cons[cons["transform"] == "translate:0,0"]["value"]
    moved = cons[cons["transform"] == "rotate:20"]["value"]
    assert (still > 99.9).all()
    assert (moved < 60).all()
    declared = json.loads((out / "metrics.json").read_text())
    assert set(df["metric"]) <= set(declared)


def test_resumed_run_with_edits_gives_the_same_table(tiny_generator_path, tmp_path, monkeypatch):
    import pytest

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    d = _direction_file(tmp_path, 32)
    base = dict(methods="im2s", transforms=("rotate:20",), generator=str(tiny_generator_path), data="synthetic:3",
                n=3, steps=3, perceptual="none", device="cpu", metrics=("psnr",), batch_size=2, edits=(f"{d}:2",))
    full = run(RunConfig(**base, run_dir=str(tmp_path / "full")), progress=False, log=lambda m: None)
    with pytest.raises(KeyboardInterrupt):
        run(RunConfig(**base, run_dir=str(tmp_path / "cut")), progress=False, log=lambda m: None,
            _stop_after_batches=3)
    cut = run(RunConfig(**base, run_dir=str(tmp_path / "cut")), progress=False, log=lambda m: None)
    key = ["item", "method", "transform", "metric"]
    a = pd.read_csv(full / "results.csv").sort_values(key).reset_index(drop=True)
    b = pd.read_csv(cut / "results.csv").sort_values(key).reset_index(drop=True)
    assert a[key].equals(b[key])
    assert np.allclose(a["value"], b["value"], atol=1e-4)
