"""The embedded default world's shipped assets (weights under ``bench/world/assets``, with a manifest)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

ASSET_DIR = Path(__file__).resolve().parent / "assets"
MANIFEST = ASSET_DIR / "manifest.json"


def manifest() -> dict:
    """The manifest: ``{"assets": {name: {"file", "sha256", "bytes", "command", "commit", ...}}}``."""
    if not MANIFEST.is_file():
        return {"assets": {}}
    return json.loads(MANIFEST.read_text())


def asset_path(name: str) -> Path | None:
    """Path of a shipped asset by name, or None if it is not shipped."""
    entry = manifest()["assets"].get(name)
    if entry is None:
        return None
    path = ASSET_DIR / entry["file"]
    return path if path.is_file() else None


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify() -> list[str]:
    """Check every manifest entry's file exists and matches its SHA-256; returns the problems found."""
    problems = []
    for name, entry in manifest()["assets"].items():
        path = ASSET_DIR / entry["file"]
        if not path.is_file():
            problems.append(f"{name}: {path} is missing")
        elif (digest := sha256(path)) != entry["sha256"]:
            problems.append(f"{name}: {path} has sha256 {digest}, manifest says {entry['sha256']}")
    return problems


ASSET_FILES = {
    "generator": ("generator.safetensors", "world StyleGAN2 64px, w_dim 256 (EMA weights, float16)"),
    "attributes": ("attributes.safetensors", "attribute net (labels + nuisance targets), float16; "
                   "also the backbone of the world perceptual distance"),
    "directions": ("directions.safetensors", "edit directions in W, one unit vector per attribute"),
    "fwplus8_encoder": ("encoder8.safetensors", "F/W+ base-code encoder, 8x8 (BDInvert design, widths 32-128)"),
    "fwplus16_encoder": ("encoder16.safetensors", "F/W+ base-code encoder, 16x16 (BDInvert design, widths 32-128)"),
    "idinvert_encoder": ("idinvert_encoder.safetensors", "IDinvert domain-guided encoder (W+), trained with the "
                         "generator fixed on procfaces renders"),
    "psp_encoder": ("psp_encoder.safetensors", "pSp encoder (FPN + map2style heads, from-scratch IR-SE backbone)"),
    "pnorm_stats": ("pnorm_stats.safetensors", "P-norm+ statistics of the world generator (1M samples, float64 PCA)"),
    "generator256_sr": ("generator256_sr.safetensors", "256 px world: detail blocks at 128/256 px on top of the "
                        "64 px world generator (float16; bench.world.world256)"),
    "fwplus4_encoder_world256": ("encoder4_world256.safetensors", "F/W+ base-code encoder, 4x4, for the 256 px "
                                 "world (BDInvert design, bench train-encoder fwplus4 --generator world256)"),
}


def install(src: Path, names: list[str], provenance: dict) -> None:
    """Copy assets from ``src`` into ``ASSET_DIR`` and record them in the manifest.

    Args:
        src: folder holding the files named in :data:`ASSET_FILES` (e.g. a device run's output).
        names: which assets to install.
        provenance: ``command``, ``commit``, ``device``, ``date`` (and anything else) stored per asset.
    """
    import shutil

    ASSET_DIR.mkdir(parents=True, exist_ok=True)
    data = manifest()
    for name in names:
        fname, description = ASSET_FILES[name]
        dst = ASSET_DIR / fname
        shutil.copyfile(src / fname, dst)
        dst.chmod(0o644)
        data["assets"][name] = {"file": fname, "sha256": sha256(dst), "bytes": dst.stat().st_size,
                                "description": description, **provenance}
    MANIFEST.write_text(json.dumps(data, indent=2) + "\n")
