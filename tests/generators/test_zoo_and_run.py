"""``bench zoo inspect`` / ``convert`` and ``bench run --generator`` on every real format (CPU, tiny fixtures)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from bench.cli import main
from bench.generators.checkpoints import CheckpointError, load_generator
from bench.generators.describe import convert_generator, inspect_generator

from .test_real_formats import FIXTURES

RUN_FILES = {  # one of each format and family
    "nvidia": FIXTURES / "nvidia_map8_fp16_clamp.pkl",
    "genforce-sg2-runner": FIXTURES / "genforce_sg2_runner_16.pth",
    "genforce-sg1": FIXTURES / "genforce_sg1_zoo_32.pth",
}


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(("path", "fields"), [
    (FIXTURES / "nvidia_map2_zdim_clamp05_p2.pkl",
     {"format": "NVIDIA StyleGAN2-ADA .pkl", "family": "StyleGAN2", "resolution": 16, "z_dim": 48, "w_dim": 32,
      "num_ws": 6, "mapping layers": 2, "conv_clamp": "0.5", "w_avg": "running w_avg from file"}),
    (FIXTURES / "genforce_sg2_runner_16.pth",
     {"format": "genforce .pth", "family": "StyleGAN2", "resolution": 16, "num_ws": 6, "mapping layers": 2,
      "generator": "models.generator_smooth", "w_avg": "truncation.w_avg from file"}),
    (FIXTURES / "genforce_sg1_runner_128_fused.pth",
     {"format": "genforce .pth", "family": "StyleGAN v1", "resolution": 128, "num_ws": 12, "w_dim": 16,
      "channels": "4:16, 8:16, 16:16, 32:8, 64:4, 128:2"}),
])
def test_inspect(path, fields):
    got = inspect_generator(path)
    assert {k: got[k] for k in fields} == fields


def test_zoo_inspect_cli():
    result = invoke("zoo", "inspect", FIXTURES / "genforce_sg1_zoo_32.pth")
    assert result.exit_code == 0, result.output
    assert "StyleGAN v1" in result.output and "num_ws" in result.output


@pytest.mark.parametrize("path", sorted(p for p in FIXTURES.iterdir() if not p.name.endswith(".safetensors")),
                         ids=lambda p: p.name)
def test_convert_roundtrip_without_pickle(path, tmp_path, monkeypatch):
    out = tmp_path / "g.safetensors"
    convert_generator(path, out)
    import pickle

    def no_pickle(*a, **k):
        raise AssertionError("pickle used to load a .safetensors file")

    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    back = load_generator(out)
    monkeypatch.undo()
    orig = load_generator(path)
    ws = torch.randn(2, orig.num_ws, orig.w_dim, generator=torch.Generator().manual_seed(0)) * 0.3 + orig.w_avg
    with torch.no_grad():
        assert torch.equal(orig.synthesis(ws), back.synthesis(ws))
    assert torch.equal(orig.w_avg, back.w_avg) and back.family == orig.family
    assert path.name in back.description


def test_convert_cli_and_errors(tmp_path):
    result = invoke("zoo", "convert", FIXTURES / "nvidia_map8_fp16_clamp.pkl", tmp_path / "g.safetensors")
    assert result.exit_code == 0, result.output and (tmp_path / "g.safetensors").is_file()
    bad = invoke("zoo", "convert", FIXTURES / "nvidia_map8_fp16_clamp.pkl", tmp_path / "g.pt")
    assert bad.exit_code != 0 and "must end in .safetensors" in bad.output
    (tmp_path / "junk.pth").write_bytes(b"\x80\x04junk")
    bad = invoke("zoo", "inspect", tmp_path / "junk.pth")
    assert bad.exit_code != 0 and "junk.pth" in bad.output and "NVIDIA .pkl" in bad.output


def test_error_names_file_and_format(tmp_path):
    sd = torch.load(FIXTURES / "genforce_sg2_runner_16.pth", weights_only=True)
    sd["models"]["generator_smooth"].pop("synthesis.layer3.weight")
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"broken\.pth: genforce \.pth \(StyleGAN2\).*layer3\.weight"):
        load_generator(tmp_path / "broken.pth")
    torch.save({"generator_smooth": {"mapping.dense0.weight": torch.zeros(2, 2)}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"odd\.pth: genforce \.pth: generator_smooth is neither"):
        load_generator(tmp_path / "odd.pth")


def _pnorm_stats(path, tmp_path) -> str:
    out = tmp_path / f"{path.stem}_pnorm.safetensors"
    result = invoke("zoo", "pnorm-stats", "--generator", path, "--out", out, "--samples", 2000, "--device", "cpu")
    assert result.exit_code == 0, result.output
    return str(out)


@pytest.mark.parametrize("kind", [*RUN_FILES, "converted"])
def test_bench_run_end_to_end(kind, tmp_path):
    """im2s, pnorm (statistics computed for this generator) and w run on each format; the log names it."""
    if kind == "converted":
        path = tmp_path / "conv.safetensors"
        convert_generator(FIXTURES / "genforce_sg1_runner_128_fused.pth", path)
    else:
        path = RUN_FILES[kind]
    stats = _pnorm_stats(path, tmp_path)
    run_dir = tmp_path / "run"
    result = invoke("run", "--generator", path, "--methods", "im2s,pnorm,w", "--data", "synthetic:2", "--n", 2,
                    "--steps", 2, "--perceptual", "none", "--device", "cpu", "--batch-size", 2, "--transform",
                    "rotate:10", "--pnorm-stats", stats, "--run-dir", run_dir, "--quiet", "--metric", "psnr")
    assert result.exit_code == 0, result.output
    gen = load_generator(path)
    family = "StyleGAN v1" if gen.family == "stylegan1" else "StyleGAN2"
    assert f"{family} {gen.resolution}px" in result.output
    table = pd.read_csv(run_dir / "results.csv")
    assert set(table["method"]) == {"im2s", "pnorm", "w"}
    assert (table["status"] == "ok").all(), table[table["status"] != "ok"]


@pytest.mark.parametrize("kind", ["nvidia", "genforce-sg1"])
def test_hostile_file_refused_by_bench_run(kind, tmp_path):
    import os
    import pickle

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / ("evil.pkl" if kind == "nvidia" else "evil.pth")
    path.write_bytes(pickle.dumps({"G_ema": Evil(), "generator_smooth": Evil()}))
    result = invoke("run", "--generator", path, "--methods", "w", "--device", "cpu", "--quiet")
    assert result.exit_code != 0 and path.name in result.output
    assert not marker.exists()


def test_genforce_edge_cases(tmp_path):
    ckpt = torch.load(FIXTURES / "genforce_sg1_zoo_32.pth", weights_only=True)
    sd = dict(ckpt["generator_smooth"])
    sd.pop("truncation.w_avg")
    torch.save({"generator_smooth": sd}, tmp_path / "noavg.pth")
    gen = load_generator(tmp_path / "noavg.pth")
    assert "mapped samples (file has none)" in gen.description and gen.w_avg.abs().sum() > 0
    torch.save({**ckpt["generator_smooth"], "synthesis.lod": torch.tensor(1.0)}, tmp_path / "growing.pth")
    with pytest.raises(CheckpointError, match=r"growing\.pth: genforce \.pth \(StyleGAN v1\): synthesis\.lod = 1"):
        load_generator(tmp_path / "growing.pth")
    idinvert = {"mapping.dense0.weight": torch.zeros(4, 4), "synthesis.layer0.epilogue.bias": torch.zeros(4)}
    torch.save(idinvert, tmp_path / "styleganinv.pth")
    with pytest.raises(CheckpointError, match=r"styleganinv\.pth: genforce \.pth \(IDinvert StyleGAN v1\)"):
        load_generator(tmp_path / "styleganinv.pth")
    wide = dict(ckpt["generator_smooth"])
    wide["mapping.dense7.weight"] = torch.zeros(32 * 8, 32)
    wide["mapping.dense7.bias"] = torch.zeros(32 * 8)
    torch.save({"generator": wide}, tmp_path / "repeat_w.pth")
    with pytest.raises(CheckpointError, match=r"repeat_w\.pth: .*repeat_w=False"):
        load_generator(tmp_path / "repeat_w.pth")


def test_snapshot_without_g_ema_refused(tmp_path):
    import pickle

    (tmp_path / "other.pkl").write_bytes(pickle.dumps({"D": 1, "training_set_kwargs": {}}))
    with pytest.raises(CheckpointError, match=r"other\.pkl: NVIDIA StyleGAN2-ADA \.pkl: expected a snapshot dict "
                       r"with 'G_ema'"):
        load_generator(tmp_path / "other.pkl")


def test_zoo_ls_names_family_and_resolution():
    result = invoke("zoo", "ls", "--generator", FIXTURES / "nvidia_map8_fp16_clamp.pkl")
    assert result.exit_code == 0, result.output
    assert "StyleGAN2 32px" in result.output and "NVIDIA StyleGAN2-ADA .pkl" in result.output
