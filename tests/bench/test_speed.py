"""`bench speed` on the tiny configuration (CPU smoke: structure and FLOP counting, never timing values)."""

import pytest
import torch
from click.testing import CliRunner

from bench import speed as sp
from bench.cli import main


def test_speed_cli_tiny_smoke():
    result = CliRunner().invoke(main, ["speed", "--config", "tiny", "--methods", "im2s,fwplus16", "--batch", "2",
                                       "--steps", "1,3", "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| im2s") or line.startswith("| fwplus16")]
    assert len(rows) == 2
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == "fp32" and cells[2] == "2"
        assert all(float(cells[k]) > 0 for k in (3, 4, 5)) and cells[6].endswith("x") and cells[7].endswith("x")
        assert float(cells[8]) > 0  # GFLOP per image-step counted


def test_flops_per_image_step_matches_a_closed_form_count():
    """One im2s step on the tiny generator, per image: a forward pass plus a backward pass to the activations
    only (the generator's weights are frozen, so no weight gradients) is about 2x the forward count; the
    counted step must lie between 1.5x and 2.5x (the loss and Adam add little)."""
    gen, perceptual, _ = sp.build_timing_setup("tiny", torch.device("cpu"))
    targets = gen(torch.randn(2, gen.z_dim)).clamp(-1, 1).detach()
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fwd:
        gen.synthesis(gen.w_avg.expand(1, gen.num_ws, -1))
    per_step = sp._flops_per_image_step("im2s", gen, perceptual, targets)
    assert 1.5 * fwd.get_total_flops() < per_step < 2.5 * fwd.get_total_flops()


def test_speed_refuses_a_fast_precision_on_the_cpu():
    result = CliRunner().invoke(main, ["speed", "--config", "tiny", "--precision", "bf16", "--device", "cpu"])
    assert result.exit_code != 0 and "needs a CUDA device" in result.output


def test_unknown_config_is_refused():
    result = CliRunner().invoke(main, ["speed", "--config", "huge", "--device", "cpu"])
    assert result.exit_code != 0 and "expected world, world256 or one of" in result.output


def test_no_single_skips_the_one_image_runs():
    result = CliRunner().invoke(main, ["speed", "--config", "tiny", "--methods", "im2s", "--batch", "2",
                                       "--steps", "1,2", "--no-single", "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("| im2s"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[3]) > 0 and cells[4] == cells[5] == cells[6] == cells[7] == "—"


def _fake_clock(per_step: float, setup: float = 0.01):
    """``seconds_for(steps)`` of a method whose runs take ``setup + steps * per_step`` seconds; records calls."""
    calls: list[int] = []

    def seconds_for(steps: int) -> float:
        calls.append(steps)
        return setup + steps * per_step

    return seconds_for, calls


def test_a_timing_above_the_floor_is_taken_as_it_is():
    seconds_for, calls = _fake_clock(per_step=0.01)
    diff, hi = sp.timed_difference(seconds_for, 5, 25, floor_s=0.1)
    assert hi == 25 and abs(diff - 0.2) < 1e-12
    assert calls == [5, 25, 5]  # warm-up, then the pair


def test_a_timing_below_the_floor_is_extended_until_it_clears_it():
    seconds_for, calls = _fake_clock(per_step=1e-5)
    diff, hi = sp.timed_difference(seconds_for, 2, 4, floor_s=0.1)
    assert diff >= 0.1 and hi > 4
    assert abs(2 * (hi - 2) / diff - 2 / 1e-5) < 1  # the rate is the true one, not 1e9-ish


def test_a_timing_that_cannot_clear_the_floor_is_refused():
    seconds_for, _ = _fake_clock(per_step=0.0)  # a run whose time does not grow with steps
    with pytest.raises(sp.TimingFloorError, match="below the 100 ms floor.*even at 500 steps"):
        sp.timed_difference(seconds_for, 2, 4, floor_s=0.1, max_steps=500, what="im2s")


def test_speed_cli_never_reports_a_rate_from_a_too_short_timing():
    """The issue's command: ``--steps 2,4`` on tiny printed 4e9 image-steps/s; now the run is extended.

    The floor is 1 s here, far above what 2 steps of the tiny generator take even on a loaded 2-core CPU
    (0.05 s was cleared without extension when the machine was busy)."""
    result = CliRunner().invoke(main, ["speed", "--config", "tiny", "--methods", "im2s", "--batch", "2",
                                       "--steps", "2,4", "--no-single", "--device", "cpu", "--min-seconds", "1.0"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("| im2s"))
    rate = float(row.strip("|").split("|")[3])
    assert 0 < rate < 1e5  # the tiny generator on two CPU cores: hundreds to thousands
    hi = int(result.output.split("batched LO,HI: im2s 2,")[1].split(".")[0])
    assert hi > 4 and "extended to 2," in result.output


def test_flops_per_image_step_does_not_count_what_a_method_caches_on_first_use():
    """P-norm+ builds its statistics the first time it meets a generator; counted inside the 1-step run, that
    one-time cost made the 2-step minus 1-step difference negative. A cold and a warm generator must agree."""
    gen, perceptual, _ = sp.build_timing_setup("tiny", torch.device("cpu"))
    targets = gen(torch.randn(1, gen.z_dim)).clamp(-1, 1).detach()
    cold = sp._flops_per_image_step("pnorm", gen, perceptual, targets)
    warm = sp._flops_per_image_step("pnorm", gen, perceptual, targets)
    assert cold > 0 and cold == pytest.approx(warm, rel=1e-9)


def test_world256_times_fwplus_at_the_worlds_base_size_and_names_what_it_leaves_out():
    params, skipped = sp.config_params("world256", ["fwplus8", "fwplus16", "im2s"])
    assert params == {"fwplus16": {"base_res": 4}} and list(skipped) == ["fwplus8"]
    assert sp.config_params("world", ["fwplus8", "fwplus16"]) == ({}, {})
    with pytest.raises(ValueError, match="fwplus8"):
        sp.config_params("world256", ["fwplus8"])


def test_speed_cli_world256_smoke():
    result = CliRunner().invoke(
        main, ["speed", "--config", "world256", "--methods", "fwplus8,fwplus16", "--batch", "1", "--steps", "1,2",
               "--no-single", "--device", "cpu", "--min-seconds", "0.001"], catch_exceptions=False)
    assert result.exit_code == 0, result.output + result.stderr
    assert "fwplus8: not timed on world256" in result.stderr and "256 px world" in result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| fwplus")]
    assert len(rows) == 1 and rows[0].startswith("| fwplus16")
