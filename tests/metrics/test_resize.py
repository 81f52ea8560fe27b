"""The antialiased resize as matrix products (bench.metrics.resize) against torch's own antialiased kernel."""

import pytest
import torch

from bench import compiling
from bench.compiling import Compilable
from bench.metrics.resize import compiled_distance, resize_antialiased, resize_by_matrices, resize_weights


@pytest.mark.parametrize(("size", "out"), [(1024, 256), (256, 64), (64, 256), (200, 64), (37, 16)])
def test_matrices_give_torchs_antialiased_resize(size, out):
    """Down by 4 (LPIPS at 1024 px, the world's net at 256 px), up, and sizes that do not divide: within
    float32 rounding of ``F.interpolate(..., antialias=True)`` (measured: at most 1.2e-7)."""
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size)) * 2 - 1
    rows = resize_weights(size, out, "cpu")
    assert rows.shape == (out, size)
    torch.testing.assert_close(resize_by_matrices(x, rows, rows), resize_antialiased(x, out), rtol=0, atol=5e-7)


def test_matrices_on_a_rectangle_and_no_resize_at_the_size():
    """A rectangular image (different weights per direction): within float32 rounding of the kernel; an image
    already at the size is returned as it is."""
    x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    ref = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    got = resize_by_matrices(x, resize_weights(96, 32, "cpu"), resize_weights(128, 32, "cpu"))
    torch.testing.assert_close(got, ref, rtol=0, atol=2e-7)
    square = x[..., :96]
    assert resize_antialiased(square, 96) is square and resize_antialiased(ref, 32) is ref


class _Sum(Compilable):
    compile_label = "the test distance"

    def distance(self, x, scale):
        return (x * scale).square().mean(dim=(1, 2, 3))


@pytest.mark.parametrize("compiled", [False, True])
def test_compiled_distance_resizes_in_the_graph_and_keeps_gradients(monkeypatch, compiled):
    """Compiled (aot_eager), the resize joins the graph (its own key); eager, torch's kernel resizes: the
    values and the gradients agree to float32 rounding."""
    monkeypatch.setattr(compiling, "COMPILE_OPTIONS", {"backend": "aot_eager"})
    net = _Sum()
    net.compiled = compiled
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    d = compiled_distance(net, net.distance, x, 16, 2.0)
    d.sum().backward()
    ref_x = x.detach().clone().requires_grad_(True)
    ref = net.distance(resize_antialiased(ref_x, 16), 2.0)
    ref.sum().backward()
    torch.testing.assert_close(d, ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(x.grad, ref_x.grad, rtol=1e-5, atol=1e-9)
    graphs = net.__dict__.get("_compiled_graphs", {})
    assert list(graphs) == (["distance from 64x64"] if compiled else [])
