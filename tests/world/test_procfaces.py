"""Tests for the procedural aligned-face renderer (bench.world.procfaces)."""

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.color import rgb2hsv
from skimage.registration import phase_cross_correlation

from bench.world import procfaces as pf


def _luma(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W) Rec. 601 luma in [-1, 1]."""
    return 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]


def _box(x0: float, x1: float, y0: float, y1: float, res: int = 64) -> tuple[slice, slice]:
    """Rows, cols of the pixels whose centres lie in the 64-unit box."""
    k = res / pf.UNITS
    return slice(round(y0 * k), round(y1 * k)), slice(round(x0 * k), round(x1 * k))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Small elementwise kernels: on a busy 2-core machine OpenMP threads mostly wait for each other.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def params() -> pf.FaceParams:
    return pf.sample_params(80, 123)


def test_same_seed_same_images_different_seed_differs():
    a, la = pf.render_faces(6, 7)
    b, lb = pf.render_faces(6, 7)
    c, _ = pf.render_faces(6, 8)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert (a - c).abs().mean() > 0.1


def test_generator_seed_matches_int_seed():
    a = pf.sample_params(5, torch.Generator().manual_seed(42))
    b = pf.sample_params(5, 42)
    assert torch.equal(pf.labels(a), pf.labels(b)) and torch.equal(a.texture_seed, b.texture_seed)


@pytest.mark.parametrize("res", [32, 64, 128])
def test_shape_dtype_range(res):
    images, labs = pf.render_faces(4, 1, resolution=res)
    assert images.shape == (4, 3, res, res) and images.dtype == torch.float32
    assert torch.isfinite(images).all() and images.min() >= -1 and images.max() <= 1
    assert images.std() > 0.2  # a picture, not a flat frame
    assert labs.shape == (4, len(pf.ATTRIBUTES)) and labs.dtype == torch.float32


def test_first_rows_do_not_depend_on_n():
    many, few = pf.sample_params(50, 9), pf.sample_params(3, 9)
    one = pf.sample_params(1, 9)
    for field in ("smile", "eye_color", "texture_seed", "hair_style", "jitter"):
        assert torch.equal(getattr(many, field)[:3], getattr(few, field))
        assert torch.equal(getattr(many, field)[:1], getattr(one, field))


def test_batch_of_many_equals_each_alone(params):
    # 80 faces span three render chunks of 32 (at 64 px); elementwise maths may differ by an ulp between layouts.
    batch = pf.render(params)
    for i in (0, 17, 63, 64, 79):
        alone = pf.render(params[i])
        torch.testing.assert_close(alone[0], batch[i], atol=1e-5, rtol=0)
    torch.testing.assert_close(pf.render(params[10:30]), batch[10:30], atol=1e-5, rtol=0)


def test_labels_match_params_and_ranges():
    p = pf.sample_params(4000, 3)
    labs = pf.labels(p)
    assert labs.shape == (4000, len(pf.ATTRIBUTES))
    assert labs.min() >= 0 and labs.max() <= 1
    for j, name in enumerate(pf.ATTRIBUTES):
        assert torch.equal(labs[:, j], getattr(p, name).float())
        if name in pf.BINARY:
            assert set(labs[:, j].unique().tolist()) <= {0.0, 1.0}
        else:  # uniform on [0, 1]: mean 0.5, sd of the mean 0.0046
            assert abs(labs[:, j].mean().item() - 0.5) < 0.03
    glasses = labs[:, pf.ATTRIBUTES.index("glasses")].mean().item()
    assert abs(glasses - pf.GLASSES_RATE) < 0.04  # binomial sd 0.0075
    assert set(p.hair_style.unique().tolist()) == set(range(len(pf.HAIR_STYLES)))
    assert pf.BINARY <= set(pf.ATTRIBUTES)


def test_smile_changes_only_the_mouth_region(params):
    p = params[:16]
    frown, smile = pf.render(p.replace(smile=0.0)), pf.render(p.replace(smile=1.0))
    diff = (smile - frown).abs().sum(1)
    rows, cols = _box(20, 44, 33, 52)
    inside = diff[:, rows, cols].sum()
    assert inside > 0.99 * diff.sum()
    assert diff[:, rows, cols].mean() > 0.1  # a visible change
    # the open smile shows teeth: bright pixels just around the mouth centre
    teeth_rows, teeth_cols = _box(28, 36, 43, 46)
    white = lambda x: (x[:, :, teeth_rows, teeth_cols].amin(1) > 0.6).float().mean()  # noqa: E731
    assert white(smile) > 0.1 and white(frown) == 0


def test_glasses_add_dark_pixels_in_the_eye_band(params):
    p = params[:16]
    bare, glasses = pf.render(p.replace(glasses=0.0)), pf.render(p.replace(glasses=1.0))
    band = _box(0, 64, 22, 34)[0]
    darker = _luma(bare)[:, band] - _luma(glasses)[:, band]
    new_dark = (darker > 0.25) & (_luma(glasses)[:, band] < -0.5)
    assert new_dark.sum((1, 2)).min() >= 30  # rims, bridge and arms: dark pixels in every face
    diff = (glasses - bare).abs().sum(1)
    assert diff[:, band].sum() > 0.99 * diff.sum()


def _hair_pixels(images: torch.Tensor) -> np.ndarray:
    """RGB in [0, 1] of the crown (above the forehead, inside the hair cap), (N * pixels, 3)."""
    rows, cols = _box(26, 38, 11.5, 15)
    crown = (images[:, :, rows, cols] + 1) / 2
    return crown.permute(0, 2, 3, 1).reshape(-1, 3).numpy()


def test_age_makes_hair_grey_and_adds_lines(params):
    p = params[:16].replace(glasses=0.0)  # rims would cover the lines under the eyes
    young_blond = pf.render(p.replace(age=0.0, hair_dark=0.0))
    old_blond = pf.render(p.replace(age=1.0, hair_dark=0.0))
    sat_young = rgb2hsv(_hair_pixels(young_blond)[None])[..., 1].mean()
    sat_old = rgb2hsv(_hair_pixels(old_blond)[None])[..., 1].mean()
    assert sat_old < 0.5 * sat_young  # independent HSV conversion (scikit-image)
    young_black = pf.render(p.replace(age=0.0, hair_dark=1.0))
    old_black = pf.render(p.replace(age=1.0, hair_dark=1.0))
    assert _hair_pixels(old_black).mean() > _hair_pixels(young_black).mean() + 0.4  # black turns grey
    # lines under the eyes darken the cheeks of old faces
    rows, cols = _box(19, 25, 29.5, 31.5)
    darker = _luma(young_black)[:, rows, cols] - _luma(old_black)[:, rows, cols]
    assert (darker.mean((1, 2)) > 0.03).all() and (darker.amax((1, 2)) > 0.1).all()


def _eye_band(images: torch.Tensor) -> np.ndarray:
    """Luma of the band holding both eyes and brows at 64 px, less its mean: (N, 14, 32) numpy."""
    if images.shape[-1] != 64:
        images = F.avg_pool2d(images, images.shape[-1] // 64)
    rows, cols = _box(16, 48, 21, 35)
    band = _luma(images)[:, rows, cols]
    return (band - band.mean((1, 2), keepdim=True)).numpy()


def _shifts(images: torch.Tensor, reference: np.ndarray) -> np.ndarray:
    """(N, 2) (dy, dx) shift of each face's eye band against ``reference`` (scikit-image, 1/20 px)."""
    return np.array([phase_cross_correlation(band, reference, upsample_factor=20, normalization="phase")[0]
                     for band in _eye_band(images)])


@pytest.mark.parametrize("res", [64, 128])
def test_eyes_are_at_the_same_place_in_every_face(params, res):
    images = pf.render(params[:48], res)
    shifts = _shifts(images, _eye_band(images).mean(0))
    dist = np.linalg.norm(shifts, axis=1)  # in 64-px pixels
    assert dist.mean() < 0.6 and dist.max() < 1.5


def test_eyes_are_at_the_fixed_positions(params):
    # darkest 3x3 blob of the mean glasses-free face (rims pass within 3 px of the iris), per eye;
    # the dark upper lash line pulls it up by up to a pixel
    mean = _luma(pf.render(params[:48].replace(glasses=0.0))).mean(0)
    blob = F.avg_pool2d(mean[None, None], 3, stride=1)[0, 0]
    for name in ("left_eye", "right_eye"):
        x, y = pf.landmarks(64)[name]
        window = blob[int(y) - 4 : int(y) + 3, int(x) - 4 : int(x) + 3]  # centres within 3 px
        at = int(window.argmin())
        found_y, found_x = int(y) - 3 + at // window.shape[1], int(x) - 3 + at % window.shape[1]
        assert abs(found_x - x) <= 1.0 and abs(found_y - y) <= 1.5, (name, found_x, found_y)


def test_jitter_moves_the_face_by_at_most_one_pixel(params):
    p = params[:8]
    still = pf.render(p.replace(jitter=0.5))
    for jitter, expected in ((0.0, -0.5), (1.0, 0.5)):
        moved = pf.render(p.replace(jitter=jitter))
        for a, b in zip(_eye_band(moved), _eye_band(still), strict=True):
            shift = phase_cross_correlation(a, b, upsample_factor=20, normalization="phase")[0]
            np.testing.assert_allclose(shift, [expected, expected], atol=0.15)


def test_analytic_edges_match_supersampling(params):
    # Coverage from signed distances should approximate a box filter: compare with 8x supersampling.
    p = params[:8]
    reference = pf.render(p, 64, supersample=8)
    for ss in (1, 2):
        assert (pf.render(p, 64, supersample=ss) - reference).abs().mean() < 0.02
    # anti-aliased: the face outline has intermediate values (a hard edge would jump in one pixel)
    assert (pf.render(p, 64, supersample=1) - reference).abs().max() < 0.6


def test_resolution_scales_the_layout(params):
    p = params[:8]
    small = pf.render(p, 64)
    big = F.avg_pool2d(pf.render(p, 128), 2)
    assert (small - big).abs().mean() < 0.04  # only per-pixel skin texture and edge sampling differ


def test_bad_input_raises_clear_errors(params):
    with pytest.raises(ValueError, match="smile"):
        pf.render(params[:2].replace(smile=torch.tensor([0.5, 1.5])))
    with pytest.raises(ValueError, match="batch size"):
        pf.render(params[:2].replace(age=torch.tensor([0.5])))
    with pytest.raises(ValueError, match="hair_style"):
        pf.render(params[:2].replace(hair_style=torch.tensor([0, 7])))
    with pytest.raises(ValueError, match="resolution"):
        pf.render(params[:1], 8)
    with pytest.raises(ValueError, match="supersample"):
        pf.render(params[:1], 64, supersample=0)
    with pytest.raises(ValueError, match="n must be"):
        pf.sample_params(-1, 0)
    assert pf.render(params[:0]).shape == (0, 3, 64, 64)


def test_seed_ranges_never_overlap():
    lo, hi = pf.TRAIN_SEED_RANGE
    assert (lo, hi) == (0, 2**30) and pf.HELDOUT_SEED_OFFSET == hi
    assert pf.face_seed(0, 5) == 5 and pf.face_seed(hi - 10, 9) == hi - 1
    with pytest.raises(ValueError, match="held-out"):
        pf.face_seed(hi - 10, 10)
    with pytest.raises(ValueError):
        pf.face_seed(-1, 0)
    source = pf.procfaces_source("20", resolution=32, seed=0)
    seeds = [item.meta["face_seed"] for item in source]
    assert min(seeds) >= pf.HELDOUT_SEED_OFFSET and len(set(seeds)) == 20


def test_source_items_are_stable_and_labelled():
    from bench.data import Item

    src5, src3 = pf.procfaces_source("5", resolution=64, seed=0), pf.procfaces_source("3", resolution=64, seed=1)
    assert src5.name == "procfaces" and len(src5) == 5 and "5" in src5.description
    assert src5.ids() == [f"procfaces-{i:06d}" for i in range(5)]
    items5, items3 = list(src5), list(src3)
    assert [it.id for it in items5] == src5.ids()
    for a, b in zip(items5[:3], items3, strict=True):
        assert isinstance(a, Item) and a.id == b.id
        torch.testing.assert_close(a.image, b.image, atol=1e-5, rtol=0)  # same face whatever N is
        assert a.seed != b.seed  # the per-item seed follows the run seed
    expected = pf.render(pf.sample_params(1, pf.HELDOUT_SEED_OFFSET + 4))[0]
    torch.testing.assert_close(items5[4].image, expected, atol=1e-5, rtol=0)
    labels = items5[4].meta["labels"]
    assert list(labels) == list(pf.ATTRIBUTES) and all(0 <= v <= 1 for v in labels.values())
    assert items5[4].image.shape == (3, 64, 64) and items5[4].image.abs().max() <= 1


def test_source_subset_and_bad_arguments():
    messages = []
    sub = pf.procfaces_source("10", resolution=32, n=4, seed=3)
    again = pf.procfaces_source("10", resolution=32, n=4, seed=3)
    assert len(sub) == 4 and sub.ids() == again.ids() == sorted(sub.ids())
    everything = pf.procfaces_source("3", resolution=32, n=9, seed=0, on_error=messages.append)
    assert len(everything) == 3 and messages and "9" in messages[0]
    for bad in ("abc", "0", "-3", ""):
        with pytest.raises(ValueError, match="procfaces"):
            pf.procfaces_source(bad, resolution=32)
    with pytest.raises(ValueError, match="resolution"):
        pf.procfaces_source("3", resolution=8)


def test_render_speed_is_reported():
    p = pf.sample_params(512, 0)
    pf.render(p[:64])
    for ss in (1, pf.DEFAULT_SUPERSAMPLE, 4):
        start = time.perf_counter()
        pf.render(p, 64, supersample=ss)
        rate = len(p) / (time.perf_counter() - start)
        print(f"procfaces render 64px supersample={ss}: {rate:.0f} images/s ({torch.get_num_threads()} threads)")


def test_chunks_are_sized_by_render_samples(monkeypatch):
    """A fixed 64 images per pass had been 6x slower per image at 256 px; the chunks do not change the images."""
    assert (pf._chunk(64, 2), pf._chunk(256, 2), pf._chunk(256, 1), pf._chunk(1024, 2)) == (32, 2, 8, 1)
    params = pf.sample_params(5, 11)
    turn = torch.tensor([[0.96, -0.28, 40.0], [0.28, 0.96, -10.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    chunked = pf.render_transformed(params, turn.repeat(5, 1, 1), 256)
    monkeypatch.setattr(pf, "_CHUNK_SAMPLES", 2**30)  # all five in one pass
    whole = pf.render_transformed(params, turn.repeat(5, 1, 1), 256)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)
