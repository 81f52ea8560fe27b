import hashlib
import io
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from bench.data import sources
from bench.data.sources import (
    Item,
    available_kinds,
    item_seed,
    open_source,
    parse_source_spec,
    register_source,
    select_subset,
)

R = 16


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _png_bytes(u8: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    """Good, odd and broken images side by side, as users' folders are."""
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    (root / ".cache").mkdir()
    Image.fromarray(_rgb(20, 20, 1)).save(root / "good.png")
    Image.fromarray(_rgb(24, 24, 2)).save(root / "photo.JPG", quality=90)
    Image.fromarray(_rgb(20, 20, 3)[..., 0], mode="L").save(root / "gray.png")
    Image.fromarray(np.dstack([_rgb(20, 20, 4), np.full((20, 20), 100, np.uint8)]), mode="RGBA").save(root / "rgba.png")
    Image.fromarray(np.linspace(0, 65535, 400).reshape(20, 20).astype(np.uint16)).save(root / "deep16.png")
    Image.fromarray(_rgb(18, 30, 5)).save(root / "sub" / "wide.webp")
    Image.fromarray(_rgb(4, 4, 6)).save(root / "tiny.png")
    (root / "truncated.png").write_bytes(_png_bytes(_rgb(64, 64, 7))[:400])
    (root / "notes.png").write_text("not an image")
    (root / "readme.txt").write_text("ignored")
    Image.fromarray(_rgb(20, 20, 8)).save(root / ".cache" / "hidden.png")
    return root


def test_parse_source_spec():
    assert parse_source_spec("synthetic:8") == ("synthetic", "8", None)
    assert parse_source_spec("synthetic:8:3") == ("synthetic", "8", 3)
    assert parse_source_spec("folder:/data/imgs:50") == ("folder", "/data/imgs", 50)
    assert parse_source_spec("folder:/data/a:b/imgs") == ("folder", "/data/a:b/imgs", None)
    assert parse_source_spec("folder:/data/x:50/") == ("folder", "/data/x:50/", None)
    assert parse_source_spec("FOLDER:C:/d") == ("folder", "C:/d", None)
    assert parse_source_spec("celebahq:/c,split=s.txt:5") == ("celebahq", "/c,split=s.txt", 5)
    for bad in ("/just/a/path", "folder:", "folder:/x:0"):
        with pytest.raises(ValueError):
            parse_source_spec(bad)


def test_unknown_kind_lists_kinds_and_suggests():
    with pytest.raises(ValueError) as info:
        open_source("foldr:/x", resolution=R)
    msg = str(info.value)
    assert "'folder'" in msg and all(k in msg for k in ("synthetic", "celebahq", "lsun", "set"))
    assert available_kinds()[:5] == ["synthetic", "folder", "celebahq", "lsun", "set"]


def test_bad_resolution_and_n_are_rejected(messy_folder):
    with pytest.raises(ValueError, match="resolution"):
        open_source(f"folder:{messy_folder}", resolution=0)
    with pytest.raises(ValueError, match="n must be"):
        open_source(f"folder:{messy_folder}", resolution=R, n=0)


def test_folder_yields_good_images_and_reports_bad_ones(messy_folder):
    errors: list[str] = []
    src = open_source(f"folder:{messy_folder}", resolution=R, on_error=errors.append)
    assert src.name == "folder" and str(messy_folder) in src.description
    assert src.ids() == ["deep16", "good", "gray", "notes", "photo", "rgba", "sub/wide", "tiny", "truncated"]
    items = list(src)
    assert [it.id for it in items] == ["deep16", "good", "gray", "photo", "rgba", "sub/wide"]
    for it in items:
        assert it.image.shape == (3, R, R) and it.image.dtype == torch.float32
        assert it.image.min() >= -1 and it.image.max() <= 1
        assert Path(it.meta["path"]).exists() and it.seed == item_seed(0, it.id)
    assert len(errors) == 3
    for name in ("tiny.png", "truncated.png", "notes.png"):
        assert sum(str(messy_folder / name) in e for e in errors) == 1
    assert len(list(src)) == 6  # re-iterable


def test_natural_order_and_colliding_stems(tmp_path):
    for name in ("10.png", "2.png", "1.png", "0.png", "2.jpg"):
        Image.fromarray(_rgb(10, 10)).save(tmp_path / name)
    src = open_source(f"folder:{tmp_path}", resolution=8)
    assert src.ids() == ["0", "1", "2.jpg", "2.png", "10"]


def test_missing_and_empty_paths_name_the_path(tmp_path):
    with pytest.raises(ValueError, match="nope"):
        open_source(f"folder:{tmp_path / 'nope'}", resolution=R)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no image files.*empty"):
        open_source(f"folder:{tmp_path / 'empty'}", resolution=R)


def _many(tmp_path: Path, count: int = 12) -> Path:
    for i in range(count):
        Image.fromarray(_rgb(10, 10, i)).save(tmp_path / f"{i:03d}.png")
    return tmp_path


def test_subset_is_seeded_stable_and_ordered(tmp_path):
    root = _many(tmp_path)
    all_ids = [f"{i:03d}" for i in range(12)]
    a = open_source(f"folder:{root}:4", resolution=8, seed=5).ids()
    assert a == open_source(f"folder:{root}:4", resolution=8, seed=5).ids()
    expected = [all_ids[i] for i in sorted(np.random.default_rng(5).permutation(12)[:4])]
    assert a == expected == sorted(a)
    assert open_source(f"folder:{root}:4", resolution=8, seed=6).ids() != a
    assert len(open_source(f"folder:{root}:4", resolution=8, n=7).ids()) == 7  # n wins over the suffix
    # the item seed depends on (source seed, id) only, not on which subset the item is in
    small = {it.id: it.seed for it in open_source(f"folder:{root}:3", resolution=8, seed=5)}
    full = {it.id: it.seed for it in open_source(f"folder:{root}", resolution=8, seed=5)}
    assert all(full[k] == v for k, v in small.items())


def test_subset_larger_than_available_warns(tmp_path):
    root = _many(tmp_path, 3)
    errors: list[str] = []
    src = open_source(f"folder:{root}", resolution=8, n=10, on_error=errors.append)
    assert len(src) == 3 and len(errors) == 1 and "10" in errors[0] and "warning" in errors[0]


def test_item_seed_is_a_stable_hash():
    digest = hashlib.sha256(b"3\x00img_7").digest()
    assert item_seed(3, "img_7") == int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
    seeds = {item_seed(0, f"x{i}") for i in range(100)}
    assert len(seeds) == 100 and all(0 <= s < 2**31 for s in seeds)
    assert item_seed(0, "a") != item_seed(1, "a")


def test_select_subset_identity_when_n_is_none():
    assert select_subset(["b", "a"], None, 0, print) == ["b", "a"]


def test_celebahq_split_restricts(tmp_path):
    root = tmp_path / "CelebA-HQ-img"
    root.mkdir()
    for i in range(10):
        Image.fromarray(_rgb(12, 12, i)).save(root / f"{i}.jpg")
    split = tmp_path / "test.txt"
    split.write_text("# test split\n3\n\n7.jpg extra columns\n0009\n99\n")
    errors: list[str] = []
    src = open_source(f"celebahq:{root},split={split}", resolution=8, on_error=errors.append)
    assert src.name == "celebahq" and src.ids() == ["3", "7", "9"]
    assert len(errors) == 1 and "99" in errors[0]
    assert len(list(src)) == 3
    sub = open_source(f"celebahq:{root},split={split}:2", resolution=8, seed=1, on_error=errors.append)
    assert len(sub) == 2 and set(sub.ids()) <= {"3", "7", "9"}
    assert len(open_source(f"celebahq:{root}", resolution=8)) == 10


def test_celebahq_split_by_index_with_zero_padded_names(tmp_path):
    for i in range(5):
        Image.fromarray(_rgb(12, 12, i)).save(tmp_path / f"{i:05d}.png")
    split = tmp_path / "split.lst"
    split.write_text("2\n4\n")
    src = open_source(f"celebahq:{tmp_path},split={split}", resolution=8)
    assert src.ids() == ["00002", "00004"]


def test_celebahq_split_errors(tmp_path):
    _many(tmp_path, 3)
    with pytest.raises(ValueError, match="missing.txt"):
        open_source(f"celebahq:{tmp_path},split={tmp_path / 'missing.txt'}", resolution=8)
    (tmp_path / "none.txt").write_text("500\n")
    with pytest.raises(ValueError, match="matches none"):
        open_source(f"celebahq:{tmp_path},split={tmp_path / 'none.txt'}", resolution=8)
    with pytest.raises(ValueError, match="bad option"):
        open_source(f"celebahq:{tmp_path},splt=x", resolution=8)


def _make_lmdb(path: Path) -> dict[bytes, np.ndarray]:
    """Write an LSUN-like LMDB (sha1 hex keys -> WebP or JPEG bytes); return key -> decoded pixels."""
    pictures = {}
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(6):
            key = hashlib.sha1(f"img{i}".encode()).hexdigest().encode("ascii")
            u8 = _rgb(16, 16, i)
            data = _png_bytes(u8, "WEBP", lossless=True) if i % 2 else _png_bytes(u8, "JPEG", quality=95)
            txn.put(key, data)
            with Image.open(io.BytesIO(data)) as img:  # reference decoding, JPEG losses included
                pictures[key] = np.asarray(img.convert("RGB"))
            if i % 2:
                assert np.array_equal(pictures[key], u8)
        txn.put(b"zzbroken", b"\x00garbage")
    env.close()
    return pictures


def test_lsun_lmdb_reads_back(tmp_path):
    pictures = _make_lmdb(tmp_path / "bedroom_val_lmdb")
    errors: list[str] = []
    src = open_source(f"lsun:{tmp_path / 'bedroom_val_lmdb'}", resolution=R, on_error=errors.append)
    assert src.name == "lsun" and len(src) == 7
    assert src.ids() == sorted(k.decode() for k in pictures) + ["zzbroken"]
    items = list(src)
    assert len(items) == 6 and len(errors) == 1 and "zzbroken" in errors[0]
    for it in items:
        ref = torch.from_numpy(pictures[it.id.encode()].astype(np.float32)).permute(2, 0, 1) / 127.5 - 1
        torch.testing.assert_close(it.image, ref, atol=1e-6, rtol=0)
        assert it.meta["key"] == it.id


def test_lsun_subset_matches_select_subset(tmp_path):
    _make_lmdb(tmp_path / "db")
    full = open_source(f"lsun:{tmp_path / 'db'}", resolution=R).ids()
    sub = open_source(f"lsun:{tmp_path / 'db'}:3", resolution=R, seed=4).ids()
    assert sub == select_subset(full, 3, 4, print)


def test_lsun_folder_behaves_like_folder(messy_folder):
    src = open_source(f"lsun:{messy_folder}", resolution=R, on_error=lambda m: None)
    assert src.name == "lsun" and len(list(src)) == 6


class TinyGenerator(nn.Module):
    """A small random generator with the benchmark's generator interface."""

    z_dim, w_dim, num_ws = 8, 6, 4

    def __init__(self, resolution: int = R):
        super().__init__()
        torch.manual_seed(0)
        self.map = nn.Linear(self.z_dim, self.w_dim)
        self.to_img = nn.Linear(self.w_dim * self.num_ws, 3 * resolution * resolution)
        self.resolution = resolution

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        return self.map(z)

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        return 2 * torch.tanh(self.to_img(ws.flatten(1))).view(-1, 3, self.resolution, self.resolution)


def test_synthetic_items_are_independent_of_n_and_keep_latents():
    gen = TinyGenerator()
    three = list(open_source("synthetic:3", resolution=R, generator=gen, seed=1))
    eleven = list(open_source("synthetic:11", resolution=R, generator=gen, seed=1))
    assert [it.id for it in three] == ["synthetic-000000", "synthetic-000001", "synthetic-000002"]
    assert len(eleven) == 11
    for a, b in zip(three, eleven[:3], strict=True):
        assert a.seed == b.seed
        torch.testing.assert_close(a.image, b.image, atol=1e-6, rtol=0)
        torch.testing.assert_close(a.latent, b.latent, atol=1e-6, rtol=0)
    # independent reconstruction of one item from its documented recipe
    it = eleven[9]
    z = torch.randn(1, gen.z_dim, generator=torch.Generator().manual_seed(item_seed(1, it.id)))
    w = gen.map(z)
    torch.testing.assert_close(it.latent, w[0].detach(), atol=1e-6, rtol=0)
    ref = gen.synthesis(w[:, None].expand(-1, gen.num_ws, -1)).clamp(-1, 1)[0]
    torch.testing.assert_close(it.image, ref.detach(), atol=1e-6, rtol=0)
    assert it.image.min() >= -1 and it.image.max() <= 1 and (it.image.abs() == 1).any()  # clamped
    assert not it.image.requires_grad and it.latent.shape == (gen.w_dim,)


def test_synthetic_subset_and_plain_object_generator():
    gen = TinyGenerator()

    class Plain:  # not an nn.Module: runs on CPU
        z_dim, num_ws = gen.z_dim, gen.num_ws
        mapping, synthesis = gen.mapping, gen.synthesis

    sub = open_source("synthetic:10", resolution=R, generator=Plain(), n=4, seed=2)
    full = {it.id: it for it in open_source("synthetic:10", resolution=R, generator=gen, seed=2)}
    assert len(sub) == 4
    for it in sub:
        torch.testing.assert_close(it.image, full[it.id].image, atol=1e-6, rtol=0)


def test_synthetic_errors():
    with pytest.raises(ValueError, match="needs a generator"):
        open_source("synthetic:4", resolution=R)
    with pytest.raises(ValueError, match="COUNT"):
        open_source("synthetic:many", resolution=R, generator=TinyGenerator())
    with pytest.raises(ValueError, match="lacks"):
        open_source("synthetic:2", resolution=R, generator=object())
    with pytest.raises(ValueError, match="resolution must match"):
        list(open_source("synthetic:2", resolution=32, generator=TinyGenerator()))


def test_register_source_adds_a_kind(monkeypatch):
    monkeypatch.setattr(sources, "_REGISTRY", dict(sources._REGISTRY))
    seen = {}

    def factory(arg, *, resolution, n, seed, generator, on_error):
        seen.update(arg=arg, resolution=resolution, n=n, seed=seed)
        return "a source"

    register_source("testkind", factory)
    assert open_source("testkind:100:7", resolution=R, seed=3) == "a source"
    assert seen == {"arg": "100", "resolution": R, "n": 7, "seed": 3}
    assert "testkind" in available_kinds()
    with pytest.raises(ValueError, match="already registered"):
        register_source("testkind", factory)
    with pytest.raises(ValueError, match="must match"):
        register_source("Bad Kind", factory)


def test_item_checks_its_image():
    with pytest.raises(ValueError, match="3, R, R"):
        Item("x", torch.zeros(1, 3, 8, 8), 0)
    with pytest.raises(ValueError, match="float32"):
        Item("x", torch.zeros(3, 8, 8, dtype=torch.float64), 0)
    it = Item("x", torch.zeros(3, 8, 8), 0)
    with pytest.raises(AttributeError):
        it.id = "y"


def test_subset_is_drawn_from_the_readable_files(tmp_path):
    """10 good images and 5 broken ones: a subset of 8 holds 8 good images, and says what it skipped."""
    for i in range(10):
        Image.fromarray(_rgb(10, 10, i)).save(tmp_path / f"good{i:02d}.png")
    for i in range(5):
        (tmp_path / f"bad{i}.png").write_text("not an image")
    for seed in range(6):
        errors: list[str] = []
        src = open_source(f"folder:{tmp_path}:8", resolution=8, seed=seed, on_error=errors.append)
        items = list(src)
        assert len(items) == 8 and all(it.id.startswith("good") for it in items)
        assert [it.id for it in items] == sorted(it.id for it in items) == src.ids()
        skipped = [e for e in errors if "bad" in e]
        assert f"15 image files found, 8 used, {len(skipped)} skipped" in src.description
        assert all(f"bad{e.split('bad')[1][0]}.png" in src.description for e in skipped)
    again = open_source(f"folder:{tmp_path}:8", resolution=8, seed=3)
    assert [it.id for it in again] == open_source(f"folder:{tmp_path}:8", resolution=8, seed=3).ids()


def test_too_few_readable_files_are_used_with_a_warning(tmp_path):
    for i in range(3):
        Image.fromarray(_rgb(10, 10, i)).save(tmp_path / f"g{i}.png")
    (tmp_path / "bad.png").write_text("x")
    errors: list[str] = []
    items = list(open_source(f"folder:{tmp_path}:4", resolution=8, seed=0, on_error=errors.append))
    assert len(items) == 3 and any("only 3 of 4 files are readable" in e for e in errors)


def test_every_format_pillow_reads_is_a_candidate(tmp_path):
    for ext in ("gif", "webp", "tiff", "bmp", "ppm", "tga"):
        Image.fromarray(_rgb(12, 12)).save(tmp_path / f"img_{ext}.{ext}")
    (tmp_path / "model.h5").write_bytes(b"\x89HDF")  # not an image format Pillow decodes: not a candidate
    src = open_source(f"folder:{tmp_path}", resolution=8)
    assert sorted(it.id for it in src) == sorted(f"img_{e}" for e in ("gif", "webp", "tiff", "bmp", "ppm", "tga"))
