import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from bench.data.images import (
    ImageLoadError,
    check_images,
    decode_image,
    from_uint8,
    load_image,
    save_image,
    to_uint8,
)

STEP = 2.0 / 255.0  # one uint8 level in [-1, 1] units


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _expected(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(u8.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1.0


def _png16_rgb(path: Path, values: np.ndarray) -> None:
    """Write a 16-bit RGB PNG by hand (Pillow cannot write one)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    h, w, _ = values.shape
    big = values.astype(">u2")
    raw = b"".join(b"\x00" + big[i].tobytes() for i in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)


def test_png_at_native_resolution_is_exact(tmp_path):
    u8 = _rgb(16, 16)
    Image.fromarray(u8).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png", 16)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    torch.testing.assert_close(x, _expected(u8), atol=1e-6, rtol=0)


def test_jpeg_and_webp_bytes_decode(tmp_path):
    u8 = _rgb(20, 20)
    Image.fromarray(u8).save(tmp_path / "a.jpg", quality=95)
    x = load_image(tmp_path / "a.jpg", 20)
    assert x.shape == (3, 20, 20) and x.min() >= -1 and x.max() <= 1
    buf = tmp_path / "b.webp"
    Image.fromarray(u8).save(buf, lossless=True)
    y = decode_image(buf.read_bytes(), 20, name="key123")
    torch.testing.assert_close(y, _expected(u8), atol=1e-6, rtol=0)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.random.default_rng(1).integers(0, 256, size=(10, 10), dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    x = load_image(tmp_path / "g.png", 10)
    ref = torch.from_numpy(gray.astype(np.float32)) / 127.5 - 1
    for c in range(3):
        torch.testing.assert_close(x[c], ref, atol=1e-6, rtol=0)


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red-ish colour everywhere
    rgba[:, :4, 3] = 0  # transparent left half
    rgba[:, 4:, 3] = 255  # opaque right half
    rgba[0, 4:, 3] = 128  # half-transparent first row on the right
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "t.png")
    x = (load_image(tmp_path / "t.png", 8) + 1) / 2 * 255
    assert torch.allclose(x[:, :, :4], torch.tensor(255.0), atol=0.5)  # white background
    assert torch.allclose(x[:, 1:, 4:], torch.tensor([200.0, 0, 0])[:, None, None], atol=0.5)
    a = 128 / 255  # closed form of "over" compositing on white
    blended = torch.tensor([200 * a + 255 * (1 - a), 255 * (1 - a), 255 * (1 - a)])
    assert torch.allclose(x[:, 0, 4:], blended[:, None], atol=1.0)


def test_palette_with_transparency_is_composited(tmp_path):
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    img.paste(1, (0, 0, 4, 8))
    img.info["transparency"] = 0
    img.save(tmp_path / "p.png", transparency=0)
    x = (load_image(tmp_path / "p.png", 8) + 1) / 2 * 255
    assert torch.allclose(x[:, :, 4:], torch.tensor(255.0), atol=0.5)
    assert torch.allclose(x[:, :, :4], torch.tensor([10.0, 20, 30])[:, None, None], atol=0.5)


def test_16bit_gray_is_scaled_by_65535(tmp_path):
    values = np.linspace(0, 65535, 144).reshape(12, 12).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as img:
        assert img.mode.startswith("I;16")
    x = load_image(tmp_path / "g16.png", 12)
    ref = torch.from_numpy(values.astype(np.float32) / 65535 * 2 - 1)
    torch.testing.assert_close(x[1], ref, atol=1e-5, rtol=0)
    assert x.min().item() == pytest.approx(-1) and x.max().item() == pytest.approx(1)


def test_16bit_rgb_is_not_clipped(tmp_path):
    values = np.zeros((8, 8, 3), dtype=np.uint16)
    values[..., 0], values[..., 1], values[..., 2] = 65535, 32896, 771
    _png16_rgb(tmp_path / "c16.png", values)
    x = load_image(tmp_path / "c16.png", 8)
    ref = torch.tensor([65535, 32896, 771]) / 65535 * 2 - 1
    assert torch.allclose(x[:, 3, 3], ref, atol=STEP)


def test_non_square_is_centre_cropped(tmp_path):
    u8 = np.zeros((12, 20, 3), dtype=np.uint8)
    u8[:, :, 0] = np.arange(20, dtype=np.uint8)[None, :] * 10  # column index encoded in red
    Image.fromarray(u8).save(tmp_path / "wide.png")
    x = load_image(tmp_path / "wide.png", 12)
    torch.testing.assert_close(x, _expected(u8[:, 4:16]), atol=1e-6, rtol=0)
    Image.fromarray(u8.transpose(1, 0, 2).copy()).save(tmp_path / "tall.png")
    y = load_image(tmp_path / "tall.png", 12)
    torch.testing.assert_close(y, _expected(u8.transpose(1, 0, 2)[4:16]), atol=1e-6, rtol=0)


def test_exif_orientation_is_applied(tmp_path):
    u8 = np.zeros((16, 16, 3), dtype=np.uint8)
    u8[:4, :, :] = 255  # white band on top
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(u8).save(tmp_path / "o.jpg", exif=exif, quality=100)
    x = load_image(tmp_path / "o.jpg", 16)
    assert x[:, :, -4:].mean() > 0.9 and x[:, :, :4].mean() < -0.9  # the band is now on the right


def test_resize_matches_pil_bicubic_reference(tmp_path):
    u8 = _rgb(64, 64, seed=3)
    Image.fromarray(u8).save(tmp_path / "big.png")
    x = (load_image(tmp_path / "big.png", 24) + 1) / 2
    ref = np.stack(
        [
            np.asarray(Image.fromarray(u8[..., c].astype(np.float32) / 255, mode="F").resize((24, 24), Image.BICUBIC))
            for c in range(3)
        ]
    )
    ref = torch.from_numpy(ref).clamp(0, 1)
    # torch's antialiased bicubic is built to match PIL's; float32 rounding is the only difference
    assert (x - ref).abs().max() < 1e-4


def test_resize_antialiases_a_fine_checkerboard(tmp_path):
    board = ((np.indices((256, 256)).sum(0) % 2) * 255).astype(np.uint8)
    Image.fromarray(board, mode="L").save(tmp_path / "board.png")
    x = load_image(tmp_path / "board.png", 32)
    assert abs(x.mean().item()) < 0.02 and x.std().item() < 0.05
    # nearest sampling of the same board aliases to a flat extreme colour: the test can tell them apart
    t = torch.from_numpy(board.astype(np.float32) / 127.5 - 1)[None, None]
    nearest = F.interpolate(t, size=(32, 32), mode="nearest")
    assert nearest.abs().mean() > 0.99


def test_resize_antialiases_period_three_lines(tmp_path):
    # An even checkerboard cannot tell antialiasing from plain bicubic sampling (both average pixel
    # pairs); lines of period 3 can: plain sampling gives moire, antialiasing a flat 1/3 grey.
    lines = np.zeros((264, 264), dtype=np.uint8)
    lines[:, ::3] = 255
    Image.fromarray(lines, mode="L").save(tmp_path / "lines.png")
    x = load_image(tmp_path / "lines.png", 33)
    assert x.mean().item() == pytest.approx(-1 / 3, abs=0.01) and x.std().item() < 0.03
    t = torch.from_numpy(lines.astype(np.float32) / 127.5 - 1)[None, None]
    plain = F.interpolate(t, size=(33, 33), mode="bicubic", align_corners=False, antialias=False)
    assert plain.std() > 0.5


@pytest.mark.parametrize("case", ["tiny", "truncated", "text", "missing"])
def test_bad_files_raise_image_load_error_naming_the_file(tmp_path, case):
    path = tmp_path / f"{case}.png"
    if case == "tiny":
        Image.fromarray(_rgb(4, 4)).save(path)
    elif case == "truncated":
        Image.fromarray(_rgb(64, 64)).save(path)
        path.write_bytes(path.read_bytes()[:300])
    elif case == "text":
        path.write_text("this is not an image\n")
    with pytest.raises(ImageLoadError) as info:
        load_image(path, 16)
    assert str(path) in str(info.value)
    if case == "tiny":
        assert "4x4" in str(info.value)
    if case == "missing":
        assert "not found" in str(info.value)


def test_truncated_jpeg_is_rejected(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(_rgb(64, 64)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:-600])
    with pytest.raises(ImageLoadError, match="cut.jpg"):
        load_image(path, 32)


def test_bad_resolution_is_rejected(tmp_path):
    Image.fromarray(_rgb(16, 16)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="resolution"):
        load_image(tmp_path / "a.png", 4)


def test_uint8_round_trip():
    levels = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(from_uint8(levels)), levels)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    err = (from_uint8(to_uint8(x)) - x).abs().max().item()
    assert err <= STEP / 2 + 1e-6
    assert to_uint8(torch.tensor([-1.0, 1.0, 0.0, 5.0])).tolist() == [0, 255, 128, 255]
    with pytest.raises(ValueError, match="uint8"):
        from_uint8(torch.zeros(3))


def test_check_images_accepts_valid_and_tolerance():
    check_images(torch.zeros(2, 3, 8, 8))
    check_images(torch.full((1, 3, 4, 4), 1.0005))


@pytest.mark.parametrize(
    "bad, reason",
    [
        (torch.zeros(3, 8, 8), "4-D"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.float64), "float32"),
        (torch.zeros(1, 1, 8, 8), "3 (RGB)"),
        (torch.zeros(1, 3, 8, 6), "square"),
        (torch.full((1, 3, 4, 4), float("nan")), "NaN"),
        (torch.full((1, 3, 4, 4), 1.01), "outside"),
        (torch.full((1, 3, 4, 4), 255.0), "outside"),
    ],
)
def test_check_images_rejects_with_shape_dtype_range(bad, reason):
    with pytest.raises(ValueError) as info:
        check_images(bad, "targets")
    msg = str(info.value)
    assert reason in msg and "targets" in msg and str(tuple(bad.shape)) in msg and str(bad.dtype) in msg
    assert "range" in msg


def test_check_images_rejects_non_tensor():
    with pytest.raises(ValueError, match="ndarray"):
        check_images(np.zeros((1, 3, 4, 4), dtype=np.float32))


def test_save_image_round_trip_and_mask(tmp_path):
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    out = save_image(x, tmp_path / "sub" / "x.png")
    back = load_image(out, 16)
    assert (back - x).abs().max().item() <= STEP / 2 + 1e-6
    mask = (torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    save_image(mask, tmp_path / "m.png", is_mask=True)
    with Image.open(tmp_path / "m.png") as img:
        stored = np.asarray(img)
    assert stored.shape == (16, 16) and set(np.unique(stored)) <= {0, 255}
    assert np.array_equal(stored == 255, mask[0].numpy() == 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png", "sub"]  # no temporary files left


@pytest.mark.parametrize(
    "bad, is_mask",
    [(torch.zeros(2, 8, 8), False), (torch.full((3, 8, 8), 2.0), False), (torch.full((1, 8, 8), -0.5), True)],
)
def test_save_image_rejects_bad_input(tmp_path, bad, is_mask):
    with pytest.raises(ValueError, match="save_image"):
        save_image(bad, tmp_path / "bad.png", is_mask=is_mask)
    assert not (tmp_path / "bad.png").exists()
