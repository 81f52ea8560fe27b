"""``bench train-encoder``, the generator-hash check, ``bench zoo ls/sefa``, all presets on a real-format generator.

The generator is the 32 px random-weight StyleGAN2 of ``tests/conftest.py`` saved as a rosinality ``.pt``;
encoders are trained for one or two steps at width 2-4 with no perceptual network.
"""

import json

import pytest
import torch
from click.testing import CliRunner

from bench.cli import main
from bench.encoders import encoder_metadata, load_encoder
from bench.encoders.provenance import check_trained_for, generator_hash
from bench.generators.checkpoints import load_rosinality, save_rosinality
from tests.conftest import make_tiny_generator

TINY = ("--iterations", "2", "--batch", "2", "--perceptual", "none", "--device", "cpu", "--quiet")
WIDTH = {"fwplus8": "4", "fwplus16": "2", "idinvert": "4", "psp": "2"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py says why


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def train(method, gen_path, out, *extra):
    data = ("--data", "synthetic:4", "--n", "4") if method in ("idinvert", "psp") else ()
    result = invoke("train-encoder", method, "--generator", gen_path, "--out", out, "--width", WIDTH[method],
                    *TINY, *data, *extra)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def encoders(tiny_generator_path, tmp_path_factory):
    """The four trained encoders (two steps each) for the tiny generator."""
    folder = tmp_path_factory.mktemp("enc")
    out = {}
    for method in ("fwplus8", "fwplus16", "idinvert", "psp"):
        out[method] = folder / f"{method}.safetensors"
        train(method, tiny_generator_path, out[method])
    return out


def test_train_encoder_metadata_and_resume(tiny_generator_path, encoders, tmp_path):
    meta = encoder_metadata(encoders["fwplus8"])
    gen = load_rosinality(tiny_generator_path)
    assert meta["generator_sha256"] == generator_hash(gen) and meta["steps"] == 2
    assert meta["recipe"]["name"] == "bdinvert-basecode-encoder" and meta["recipe"]["settings"]["lr"] == 1e-3
    assert meta["recipe"]["settings"]["head_width"] == gen.feature_shape(8)[0]  # encoder_simple's head
    assert isinstance(meta["iterations_per_s"], float)
    # the same command with more iterations resumes from its checkpoint (OUT.work)
    result = train("fwplus8", tiny_generator_path, encoders["fwplus8"], "--iterations", "3")
    assert "iterations/s" in result.output
    assert encoder_metadata(encoders["fwplus8"])["steps"] == 3
    for method in ("idinvert", "psp"):
        assert encoder_metadata(encoders[method])["recipe"]["data"] == "synthetic:4"


def test_train_encoder_option_errors(tiny_generator_path, tmp_path):
    result = CliRunner().invoke(main, ["train-encoder", "psp", "--generator", str(tiny_generator_path), "--out",
                                       str(tmp_path / "p.safetensors"), *TINY])
    assert result.exit_code != 0 and "trains on real images; pass --data" in result.output
    other = tmp_path / "other.pt"
    save_rosinality(make_tiny_generator(seed=5), other)
    work = tmp_path / "w"
    train("fwplus8", tiny_generator_path, tmp_path / "a.safetensors", "--work", work, "--iterations", "1")
    result = CliRunner().invoke(main, ["train-encoder", "fwplus8", "--generator", str(other), "--out",
                                       str(tmp_path / "b.safetensors"), "--work", str(work), *TINY])
    assert result.exit_code != 0 and "holds a training run for another generator" in result.output


def test_hash_mismatch_is_refused_unless_waived(encoders, tmp_path):
    other = make_tiny_generator(seed=5)
    enc = load_encoder(encoders["fwplus16"], method="fwplus16")
    with pytest.raises(ValueError, match=r"trained for StyleGAN2 32px .* not for this generator.*#any-generator"):
        check_trained_for(enc, other, str(encoders["fwplus16"]), "fwplus16")
    assert "#any-generator" in check_trained_for(enc, other, "f", "fwplus16", waive=True)
    other_path = tmp_path / "other.pt"
    save_rosinality(other, other_path)
    listing = invoke("zoo", "ls", "--generator", other_path, "--encoder", f"fwplus16={encoders['fwplus16']}")
    assert "fwplus16   NOT ready" in listing.output and "psp        needs --encoder psp=FILE" in listing.output
    assert "bench train-encoder idinvert --generator" in listing.output


def test_zoo_sefa_writes_edit_directions(tiny_generator_path, tmp_path):
    result = invoke("zoo", "sefa", "--generator", tiny_generator_path, "--out", tmp_path / "sefa", "--k", "3",
                    "--layers", "0-3")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "sefa" / "sefa.json").read_text())
    assert record["rows"] == [0, 1, 2, 3] and len(record["eigenvalues"]) == 3
    d = torch.load(tmp_path / "sefa" / "sefa_0.pt", weights_only=True)
    assert d.shape == (8, 32) and torch.allclose(d[:4].norm(dim=1), torch.ones(4)) and not d[4:].any()


def test_run_all_seven_presets_on_a_real_format_generator(tiny_generator_path, encoders, tmp_path):
    """bench run with every preset, the trained encoders and P-norm+ stats, on the rosinality .pt generator."""
    import pandas as pd

    stats = _stats(load_rosinality(tiny_generator_path), tmp_path)
    ready = invoke("zoo", "ls", "--generator", tiny_generator_path,
                   *[f"--encoder={m}={p}" for m, p in encoders.items()]).output
    assert ready.count("ready (") == 4, ready
    run_dir = tmp_path / "run"
    methods = "im2s,w,pnorm,fwplus8,fwplus16,idinvert,psp"
    result = invoke("run", "--generator", tiny_generator_path, "--methods", methods,
                    *[f"--encoder={m}={p}" for m, p in encoders.items()], "--pnorm-stats", stats,
                    "--data", "synthetic:1", "--n", "1", "--steps", "1", "--transform", "rotate:10", "--no-identity",
                    "--perceptual", "none", "--metric", "psnr", "--device", "cpu", "--batch-size", "1",
                    "--run-dir", run_dir, "--quiet")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(run_dir / "results.csv")
    assert sorted(table["method"].unique()) == sorted(["im2s", "w", "pnorm", "fwplus8", "fwplus16", "idinvert", "psp"])
    assert table["value"].notna().all(), table


def test_run_with_released_format_encoders(tiny_generator_path, tmp_path):
    """BDInvert- and IDinvert-format .pth files (random weights) run through bench run --encoder."""
    import pandas as pd

    from bench.encoders.idinvert_release import ReleasedIDInvertEncoder
    from methods.fwplus import BaseCodeEncoder

    gen = load_rosinality(tiny_generator_path)
    torch.manual_seed(0)
    basecode = BaseCodeEncoder(gen.feature_shape(8)[0], width=4, max_width=16, head_width=gen.feature_shape(8)[0])
    torch.save({"encoder": basecode.state_dict(), "optimizer": {}, "scheduler": {}, "epoch": 1},
               tmp_path / "encoder_tiny_basesize8.pth")
    torch.save(ReleasedIDInvertEncoder(32, w_dim=32, base=4, max_channels=16).state_dict(),
               tmp_path / "styleganinv_tiny_encoder.pth")
    run_dir = tmp_path / "run"
    result = invoke("run", "--generator", tiny_generator_path, "--methods", "fwplus8,idinvert",
                    f"--encoder=fwplus8={tmp_path / 'encoder_tiny_basesize8.pth'}",
                    f"--encoder=idinvert={tmp_path / 'styleganinv_tiny_encoder.pth'}", "--pnorm-stats",
                    _stats(gen, tmp_path), "--data", "synthetic:1", "--n", "1", "--steps", "1", "--perceptual", "none",
                    "--metric", "psnr", "--device", "cpu", "--batch-size", "1", "--run-dir", run_dir, "--quiet")
    assert result.exit_code == 0, result.output
    assert sorted(pd.read_csv(run_dir / "results.csv")["method"].unique()) == ["fwplus8", "idinvert"]
    bad = CliRunner().invoke(main, ["run", "--generator", str(tiny_generator_path), "--methods", "fwplus16",
                                    f"--encoder=fwplus16={tmp_path / 'encoder_tiny_basesize8.pth'}", "--device", "cpu",
                                    "--data", "synthetic:1", "--n", "1", "--run-dir", str(tmp_path / "r2"), "--quiet"])
    assert bad.exit_code != 0 and "base size 8, method 'fwplus16' needs 16" in bad.output


def _stats(gen, tmp_path):
    from bench.world.train_methods import save_pnorm_stats
    from methods.pnorm import compute_pnorm_stats

    path = tmp_path / "pn.safetensors"
    save_pnorm_stats(compute_pnorm_stats(gen, 2000), path)
    return path


def test_out_of_gpu_memory_names_the_batch_option(tiny_generator_path, tmp_path, monkeypatch):
    # IDinvert's published batch (128, for 256 px generators) ran out of memory on an 80 GB card at 1024 px
    import bench.encoders.train as train_module

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")

    monkeypatch.setitem(train_module.RECIPES, "idinvert", ("idinvert-domain-guided-encoder", out_of_memory))
    args = ["train-encoder", "idinvert", "--generator", str(tiny_generator_path), "--out",
            str(tmp_path / "i.safetensors"), "--data", "synthetic:4", "--n", "4", "--iterations", "2",
            "--perceptual", "none", "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "out of GPU memory at batch 128 with the 32 px generator" in result.output
    assert "--batch 32" in result.output
