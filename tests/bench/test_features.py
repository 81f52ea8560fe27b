"""Feature sidecars: written before each batch's journal entry, kept across a resume, read by the report."""

import numpy as np
import pandas as pd
import pytest

import bench.results
from bench.config import RunConfig
from bench.runner import run
from reports.distribution import distribution_table, read_sidecars

pytestmark = pytest.mark.usefixtures("real_perceptual_extra")


@pytest.fixture(autouse=True)
def _no_lpips_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def config(gen_path, run_dir):
    return RunConfig(methods="im2s", transforms=("rotate:20",), generator=str(gen_path), data="synthetic:3", n=3,
                     steps=2, perceptual="none", device="cpu", batch_size=2, run_dir=str(run_dir),
                     metrics=("psnr",))


def test_sidecars_precede_commits_and_survive_resume(tiny_generator_path, tmp_path, monkeypatch):
    seen = []
    commit = bench.results.RunStore.commit

    def checked_commit(store, record):
        units, _ = read_sidecars(store.dir)
        seen.append(all(u in units for u in record.units))  # the features are on disk before the commit
        commit(store, record)

    monkeypatch.setattr(bench.results.RunStore, "commit", checked_commit)
    full = run(config(tiny_generator_path, tmp_path / "full"), progress=False, log=lambda m: None)
    cfg = config(tiny_generator_path, tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=False, log=lambda m: None, _stop_after_batches=1)
    run(cfg, progress=False, log=lambda m: None)
    assert seen and all(seen)
    units, meta = read_sidecars(tmp_path / "resumed")
    committed = set(pd.read_csv(tmp_path / "resumed" / "results.csv")[["item", "method", "transform"]]
                    .itertuples(index=False, name=None))
    assert committed <= set(units) and len(committed) == 6
    assert "effnet-lite0" in meta["networks"] and "inception-v3" in meta["unavailable"]
    reference, _ = read_sidecars(full)
    for key in committed:  # the resumed run's features equal the uninterrupted run's
        np.testing.assert_allclose(units[key]["recon"]["effnet-lite0"].astype(float),
                                   reference[key]["recon"]["effnet-lite0"].astype(float), atol=2e-3)
    table, _ = distribution_table([tmp_path / "resumed"])
    assert set(table["metric"]) == {"fd-effnet-lite0", "kd-effnet-lite0"}
    assert table["n"].tolist() == [3] * 4 and set(table["transform"]) == {"identity", "rotate:20"}
    # the distribution statistics stay out of the per-item rows
    assert set(pd.read_csv(full / "results.csv")["metric"]) == {"psnr", "psnr@valid"}
