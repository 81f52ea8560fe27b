"""The ``--batch-size auto`` probe (``bench.accel.probe_batch_size``) against a simulated CUDA card.

The card model: a batch of ``b`` needs ``b * per_image + fixed`` bytes (out-of-memory above the card), plus a
convolution workspace that takes up to ``workspace`` bytes of what is left, as cuDNN's strict-float32 FFT
algorithms do (they fall back to leaner ones when less is free). On the H100 this made pSp at 1024 px run at
batch 1: 133 MiB per image, 77 GiB free, but the two probe peaks carried some 70 GiB of workspace each.
"""

from __future__ import annotations

import pytest
import torch

from bench import accel

GiB, MiB = 2**30, 2**20


class FakeCard:
    def __init__(self, total: float, per_image: float, fixed: float = 0.0, workspace: float = 0.0,
                 first_call: float = 0.0):
        self.total, self.per_image, self.fixed, self.workspace = total, per_image, fixed, workspace
        self.first_call = first_call  # a one-off cost of the first call (compilation, library workspaces)
        self.peak, self.calls = 0.0, []

    def invert(self, b: int) -> None:
        self.calls.append(b)
        need = b * self.per_image + self.fixed + (self.first_call if len(self.calls) == 1 else 0.0)
        if need > self.total:
            raise torch.cuda.OutOfMemoryError(f"fake card: {need / GiB:.1f} GiB for batch {b}")
        self.peak = need + min(self.workspace, self.total - need)


@pytest.fixture
def card(monkeypatch):
    def install(**kw) -> FakeCard:
        fake = FakeCard(**kw)
        monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
        monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: fake.peak)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (fake.total, fake.total))
        return fake
    return install


CUDA = torch.device("cuda")


def test_memory_per_image_sets_the_batch(card):
    fake = card(total=80 * GiB, per_image=1 * GiB, fixed=2 * GiB)
    batch, note = accel.probe_batch_size(fake.invert, CUDA, limit=500)
    assert batch == int((0.8 * 80 - 2) // 1)  # 62
    assert fake.calls == [2, 2, 6]  # a warm-up, then no extra probe when the fixed part is small
    assert "1024 MiB per image" in note


def test_a_workspace_that_takes_the_free_memory_does_not_force_batch_one(card):
    fake = card(total=77 * GiB, per_image=133 * MiB, workspace=70 * GiB)
    batch, note = accel.probe_batch_size(fake.invert, CUDA, limit=32)
    # the first estimate is 1 (70 GiB "fixed" of a 61.6 GiB budget); the batch of 32 runs as a probe
    assert batch == 32
    assert fake.calls == [2, 2, 6, 32]
    assert "workspace" in note and "batch 32 ran as a probe" in note


def test_a_real_fixed_cost_halves_to_a_batch_that_runs(card):
    fake = card(total=80 * GiB, per_image=1 * GiB, fixed=60 * GiB)
    batch, _ = accel.probe_batch_size(fake.invert, CUDA, limit=100)
    # first estimate 4; candidates 64 and 32 run out of memory, 16 runs (76 of 80 GiB)
    assert fake.calls == [2, 2, 6, 64, 32, 16]
    assert batch == 16
    assert batch * fake.per_image + fake.fixed <= fake.total


def test_no_extra_probe_when_the_first_estimate_reaches_the_limit(card):
    fake = card(total=80 * GiB, per_image=100 * MiB, fixed=40 * GiB)
    batch, note = accel.probe_batch_size(fake.invert, CUDA, limit=50)
    assert (batch, fake.calls) == (50, [2, 2, 6])
    assert "ran as a probe" not in note


def test_a_one_off_cost_of_the_first_call_is_not_taken_for_memory_per_image(card):
    # compiled Im2S on the H100 had probed "0 MiB per image": the compilation's allocations lay in batch 2's peak
    fake = card(total=80 * GiB, per_image=800 * MiB, fixed=1 * GiB, first_call=6 * GiB)
    batch, note = accel.probe_batch_size(fake.invert, CUDA, limit=500)
    assert "800 MiB per image" in note
    assert batch == int((0.8 * 80 - 1) * GiB // (800 * MiB))  # 80


def test_the_cpu_answer_is_the_default(card):
    fake = card(total=1 * GiB, per_image=1 * MiB)
    assert accel.probe_batch_size(fake.invert, torch.device("cpu"), limit=3)[0] == 3
    assert fake.calls == []
