"""Every method on the 256 px world: lifted pSp / IDinvert encoders, protocol runs, presets it cannot hold."""

import html
import json

import pytest
import torch
from click.testing import CliRunner

from bench.cli import main
from bench.config import RunConfig
from bench.encoders import load_encoder
from bench.prepare import WORLD64, WORLD256, choose_world, world_proportions
from bench.world import world256, zoo


@pytest.mark.parametrize("name", world256.LIFTED_ENCODERS)
def test_lifted_encoder_keeps_the_code_and_repeats_the_last_row(name):
    enc = load_encoder(zoo.asset_path(f"{name}_encoder"), "cpu", method=name)
    lifted = world256.lift_encoder(enc, 14)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        code, code14 = enc(x), lifted(x)
    assert code.shape == (3, 10, 256) and code14.shape == (3, 14, 256)
    assert torch.equal(code14[:, :10], code)  # the 64 px world's rows, bit for bit
    assert torch.equal(code14[:, 10:], code[:, 9:10].expand(-1, 4, -1))  # the detail blocks' rows: the last
    assert "lifted to 14 rows" in lifted.source and not any(p.requires_grad for p in lifted.parameters())


def test_lift_refuses_other_encoders():
    enc = load_encoder(zoo.asset_path("fwplus16_encoder"), "cpu", method="fwplus16")
    with pytest.raises(ValueError, match="no lift"):
        world256.lift_encoder(enc, 14)
    enc = load_encoder(zoo.asset_path("psp_encoder"), "cpu", method="psp")
    with pytest.raises(ValueError, match="cannot lift"):
        world256.lift_encoder(enc, 8)


def test_protocol_runs_choose_the_256_px_world(tmp_path, monkeypatch):
    cfg, note = choose_world(RunConfig(protocol="bdinvert-table1"))
    assert cfg.generator == WORLD256 and "paper's proportions" in note
    assert choose_world(RunConfig())[0].generator is None  # the CPU default stays the 64 px world
    assert choose_world(RunConfig(protocol="bdinvert-table1", generator=WORLD64)) == (
        RunConfig(protocol="bdinvert-table1"), "")
    assert choose_world(RunConfig(generator="G.pt", protocol="bdinvert-table1"))[0].generator == "G.pt"
    monkeypatch.chdir(tmp_path)
    (tmp_path / WORLD64).write_bytes(b"")  # a file of that name is a file
    assert choose_world(RunConfig(generator=WORLD64))[0].generator == WORLD64


def test_a_preset_the_world_cannot_hold_is_left_out_with_its_reason():
    params, skipped = world_proportions(RunConfig(methods="fwplus,im2s", generator=WORLD256), {})
    assert params == {"fwplus16": {"base_res": 4}} and list(skipped) == ["fwplus8"]
    assert "2x2 base code" in skipped["fwplus8"]
    params, skipped = world_proportions(RunConfig(methods="fwplus8", generator=WORLD256),
                                        {"fwplus8": {"base_res": 8}})
    assert params == {"fwplus8": {"base_res": 8}} and not skipped  # an explicit size runs (and is reported)
    with pytest.raises(ValueError, match="--methods fwplus8 on --generator world256: .*2x2"):
        world_proportions(RunConfig(methods="fwplus8", generator=WORLD256), {})
    assert world_proportions(RunConfig(methods="fwplus8"), {}) == ({}, {})  # the 64 px world runs it as it is


def test_run_on_the_256_px_world_records_skips_and_encoders(tmp_path):
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["run", "--generator", "world256", "--methods", "fwplus8,psp", "--n", "1",
                                    "--transform", "rotate:20", "--no-identity", "--run-dir", str(run), "--quiet",
                                    "--metric", "psnr", "--max-samples", "0"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "fwplus8: not run on --generator world256" in res.output
    config = json.loads((run / "config.json").read_text())
    assert "2x2 base code" in config["skipped_methods"]["fwplus8"]
    assert "lifted to 14 rows" in config["method_settings"]["psp"]["encoder"]
    again = CliRunner().invoke(main, ["run", "--generator", "world256", "--methods", "fwplus8,psp", "--n", "1",
                                      "--transform", "rotate:20", "--no-identity", "--run-dir", str(run), "--quiet",
                                      "--metric", "psnr", "--max-samples", "0"], catch_exceptions=False)
    assert again.exit_code == 0, again.output  # the recorded skip is no configuration change: it resumes
    res = CliRunner().invoke(main, ["report", str(run)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    table = (run / "report" / "table.md").read_text()
    assert "fwplus8: not run: the paper's 8x8 proportion" in table and "encoder psp_encoder.safetensors" in table
    page = html.unescape((run / "report" / "report.html").read_text())
    assert "method fwplus8</th><td>not run: the paper's 8x8 proportion" in page


def test_zoo_ls_says_what_runs_on_each_world():
    out = CliRunner().invoke(main, ["zoo", "ls", "--generator", "world256"], catch_exceptions=False).output
    assert "fwplus16   ready (shipped encoder4_world256.safetensors)" in out
    assert "fwplus8    not run here: the paper's 8x8 proportion" in out
    assert "psp        ready (shipped psp_encoder.safetensors, the 64 px world's, lifted" in out
    assert "idinvert   ready (shipped idinvert_encoder.safetensors, the 64 px world's, lifted" in out
    out = CliRunner().invoke(main, ["zoo", "ls", "--generator", "world64"], catch_exceptions=False).output
    assert "fwplus8    ready (shipped encoder8.safetensors)" in out and "lifted" not in out


def test_an_old_64_px_protocol_run_resumes_with_world64(tmp_path):
    from bench.results import RunStore

    run = tmp_path / "old"
    run.mkdir()
    old = RunConfig(methods="psp", protocol="bdinvert-table1", n=1).to_dict() | {"run_dir": str(run)}
    (run / "config.json").write_text(json.dumps(old))
    store = RunStore(run)
    with pytest.raises(ValueError, match="--generator world64"):
        store.check_config(choose_world(RunConfig(methods="psp", protocol="bdinvert-table1", n=1))[0].to_dict()
                           | {"run_dir": str(run)})
    store.check_config(choose_world(RunConfig(methods="psp", protocol="bdinvert-table1", n=1,
                                              generator=WORLD64))[0].to_dict() | {"run_dir": str(run)})
