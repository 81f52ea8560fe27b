"""``scripts/compiled_traffic.py``: the bytes Inductor's kernels move, against closed forms."""

import shutil

import pytest
import torch
import torch.nn.functional as F

from scripts.compiled_traffic import counting_kernels

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                                   reason="Inductor's CPU code needs a C compiler")]


def test_fused_kernels_read_each_input_once_and_write_each_output_once():
    x = torch.randn(64, 256)  # 65,536 bytes
    torch._dynamo.reset()
    with counting_kernels() as records:
        y = torch.compile(lambda t: (torch.relu(t * 2 + 1).sin(), (t * t).sum(1)))(x)
    assert y[0].shape == (64, 256) and y[1].shape == (64,)
    # the CPU backend makes two kernels: the pointwise chain (x read once, the (64, 256) result written once)
    # and the sum (x read once, the (64,) sums written once)
    assert sorted(n for _, n in records) == [65_536 + 256, 65_536 + 65_536]
    assert {kind for (kind, _), _ in records} == {"inductor kernel"}


def test_a_convolution_is_an_external_kernel_counted_by_its_inputs_and_output():
    x, w = torch.randn(2, 8, 16, 16), torch.randn(4, 8, 3, 3)  # 16,384 and 1,152 bytes
    torch._dynamo.reset()
    with counting_kernels() as records:
        y = torch.compile(lambda a, b: F.conv2d(a, b, padding=1).relu())(x, w)
    assert y.shape == (2, 4, 16, 16)  # 8,192 bytes
    kinds = {kind: n for (kind, _), n in records}
    assert kinds["extern"] == 16_384 + 1_152 + 8_192
    assert kinds["inductor kernel"] == 8_192 + 8_192  # the ReLU: reads the convolution's output, writes its own
