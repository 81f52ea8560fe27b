"""Unblurred transformed targets: direct procedural renders, the Lanczos-3 warp and the HF ratio.

References are independent of the code under test: exact pixel-grid maps (a 90-degree rotation and an
integer shift move render samples onto render samples, so a correct direct render equals the permuted
aligned render), and kornia's own bilinear warp for the ratio it loses.
"""

import torch
from kornia.geometry.transform import warp_affine

from bench.data import Item
from bench.targets import make_targets
from bench.world.procfaces import FaceParams, render, render_transformed, sample_params
from transforms import apply_transform
from transforms.geometric import sample_params as transform_params
from transforms.protocols import expand_protocol
from transforms.resample import warp_lanczos
from transforms.sharpness import hf_ratio, laplacian_energy

R = 64


def _faces(n: int = 4) -> FaceParams:
    return FaceParams.cat([sample_params(1, 2**30 + i) for i in range(n)])


def _rot90(n: int) -> torch.Tensor:
    c = (R - 1) / 2  # counter-clockwise on screen, about the centre: (x, y) -> (y, -x) around c
    m = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 2 * c], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return m.expand(n, 3, 3)


def test_identity_render_equals_aligned_render():
    p = _faces()
    out = render_transformed(p, torch.eye(3, dtype=torch.float64).expand(len(p), 3, 3), R)
    assert (out - render(p, R)).abs().max() < 1e-5


def test_rot90_render_is_the_rotated_aligned_render():
    p = _faces()
    aligned = render(p, R)
    out = render_transformed(p, _rot90(len(p)), R)
    expected = torch.rot90(aligned, 1, dims=(2, 3))  # counter-clockwise, as the matrix
    assert (out - expected).abs().max() < 1e-4
    warped = apply_transform(aligned, [transform_params(expand_protocol("smoke", R)[0], seed=0, resolution=R)] * 4)
    assert (warped.image - aligned).abs().max() < 1e-5  # sanity: identity spec of the protocol is exact


def test_integer_shift_render_matches_shifted_render_inside_the_valid_region():
    p = _faces()
    m = torch.eye(3, dtype=torch.float64).expand(len(p), 3, 3).clone()
    m[:, 0, 2], m[:, 1, 2] = 3.0, -2.0
    out = render_transformed(p, m, R, fill="zeros")
    expected = torch.roll(render(p, R), shifts=(-2, 3), dims=(2, 3))
    assert (out[:, :, : R - 2, 3:] - expected[:, :, : R - 2, 3:]).abs().max() < 1e-4
    assert (out[:, :, :, :3] == -1).all()  # black outside the frame with fill=zeros


def test_direct_renders_keep_fine_detail_that_bilinear_warps_lose():
    n = 8
    p = _faces(n)
    aligned = render(p, R)
    for spec in expand_protocol("bdinvert-table1", R)[1:7]:  # translations and rotations
        params = [transform_params(spec, seed=i, resolution=R) for i in range(n)]
        warped = apply_transform(aligned, params)
        direct = render_transformed(p, warped.matrix.double(), R)
        assert hf_ratio(aligned, direct, warped.mask, warped.matrix).mean() >= 0.9, spec.label
        assert hf_ratio(aligned, warped.image, warped.mask, warped.matrix).mean() < 0.7, spec.label
        # same geometry: the direct render and the bilinear warp differ only by the blur
        diff = ((direct - warped.image).abs() * warped.mask).sum() / (3 * warped.mask.sum())
        assert diff < 0.03, spec.label


def test_laplacian_energy_closed_form():
    # a checkerboard of +-1 has Laplacian +-8 everywhere inside: energy 64
    y, x = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    board = ((x + y) % 2 * 2 - 1).float().expand(1, 3, 8, 8)
    assert torch.allclose(laplacian_energy(board, torch.ones(1, 1, 8, 8)), torch.tensor([64.0]))
    assert torch.isnan(laplacian_energy(board, torch.zeros(1, 1, 8, 8))).all()


def test_lanczos_is_exact_on_the_pixel_grid_and_sharper_than_bilinear_between():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    eye = torch.eye(3).expand(2, 3, 3).clone()
    assert (warp_lanczos(img, eye, "reflection") - img).abs().max() < 1e-6
    shift = eye.clone()
    shift[:, 0, 2] = 2.0
    assert (warp_lanczos(img, shift, "reflection")[..., 2:] - img[..., :-2]).abs().max() < 1e-6
    half = eye.clone()
    half[:, 0, 2] = 0.5
    params = [transform_params(expand_protocol("smoke", 32)[0], seed=0, resolution=32)] * 2
    mask = apply_transform(img, params).mask[:, :, :, 1:]
    lan = warp_lanczos(img, half, "reflection")[..., 1:]
    lin = warp_affine(img, half[:, :2], (32, 32), align_corners=True, padding_mode="reflection")[..., 1:]
    e = lambda t: laplacian_energy(t, mask).mean()  # noqa: E731
    assert e(lan) > 1.5 * e(lin)  # a half-pixel bilinear shift averages neighbours; Lanczos mostly does not


def test_make_targets_records_how_each_target_was_made():
    p = _faces(2)
    calls = []

    def renderer(items, matrices, fill):
        calls.append(len(items))
        return render_transformed(p[[int(it.id) for it in items]], matrices, R, fill)

    images = render(p, R)
    rendered = [Item(id=str(i), image=images[i], seed=i, render=renderer) for i in range(2)]
    plain = [Item(id=str(i), image=images[i], seed=i) for i in range(2)]
    specs = expand_protocol("smoke", R)
    params = [transform_params(specs[0], seed=0, resolution=R), transform_params(specs[2], seed=1, resolution=R)]
    a = make_targets(rendered, params)
    b = make_targets(plain, params, resample="lanczos3")
    assert a.made == ("identity", "render") and b.made == ("identity", "lanczos3") and calls == [1]
    assert a.hf_ratio[1] > b.hf_ratio[1] > make_targets(plain, params).hf_ratio[1]
    assert torch.equal(a.mask, b.mask)


def test_a_direct_render_does_not_depend_on_the_batch_it_is_in():
    # what makes a cached target (rendered in another batch) the same tensor, bit for bit
    p = _faces(3)
    m = torch.tensor([[0.9, -0.2, 5.0], [0.2, 0.9, -3.0], [0.0, 0.0, 1.0]], dtype=torch.float64).expand(3, 3, 3)
    together = render_transformed(p, m, R)
    for i in range(3):
        assert torch.equal(render_transformed(p[[i]], m[[i]], R), together[[i]])


def test_rendered_targets_are_cached_across_calls(monkeypatch):
    import bench.targets as targets

    p = _faces(3)
    calls = []

    def renderer(items, matrices, fill):
        calls.append(sorted(it.id for it in items))
        return render_transformed(p[[int(it.id) for it in items]], matrices, R, fill)

    images = render(p, R)
    items = [Item(id=str(i), image=images[i], seed=i, render=renderer) for i in range(3)]
    spec = [s for s in expand_protocol("bdinvert-table1", R) if s.label == "R20"][0]
    params = [transform_params(spec, seed=i, resolution=R) for i in range(3)]
    first = make_targets(items[:2], params[:2])  # a method's batch
    again = make_targets(items, params)  # the next method's batch: only face 2 is new
    assert calls == [["0", "1"], ["2"]]
    targets._render_cache.clear()
    fresh = make_targets(items, params)
    assert torch.equal(again.image, fresh.image) and torch.equal(first.image, fresh.image[:2])
    assert fresh.made == ("render",) * 3
    # past the byte budget the least recently used targets go: one face's worth keeps one entry
    monkeypatch.setattr(targets, "RENDER_CACHE_BYTES", images[0].nbytes)
    calls.clear()
    make_targets(items, params)
    assert calls == [] and len(targets._render_cache.entries) == 1
    make_targets(items[:1], params[:1])
    assert calls == [["0"]]
