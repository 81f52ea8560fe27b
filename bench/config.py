"""The run configuration: one typed object, filled from defaults < config file < command line.

Every ``bench run`` option maps 1:1 to a field here and takes its default from here. ``resolve`` applies
the profile (``quick`` on a CPU so a first run finishes in minutes, ``paper`` with the published settings
on a GPU) and fills data-dependent defaults; the result is what gets written to ``config.json``.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomllib

from bench.choices import PRECISION_CHOICES
from bench.dataspec import check_data_options, stated_count

PROFILES = {
    # steps cap per method and default number of items; None keeps each method's published default
    "quick": {"max_steps": 300, "n": 8},
    "paper": {"max_steps": None, "n": 50},
}


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers (plus where to write them).

    Attributes:
        methods: comma-separated method presets or aliases (``bench ls methods``).
        transforms: transform specs (``bench ls transforms`` shows the grammar).
        protocol: a named transform protocol (e.g. ``bdinvert-table1``), added before ``transforms``.
        include_identity: also run the untransformed images, as the baseline row of every table.
        fill: border fill of the transforms: reflection, zeros (black) or border.
        resample: how image sources are warped: bilinear, bicubic or lanczos3 (band-limited). Procedural
            faces are rendered transformed instead (no resampling); ``transforms.csv`` records which ran.
        generator: generator checkpoint; None = the embedded default world.
        data: image source spec (``synthetic:N``, ``folder:PATH``, ``celebahq:PATH``, ``lsun:PATH``,
            ``set:PATH``, ``procfaces:N``); None = the default world's held-out faces.
        n: number of items (seeded random subset); None = the profile's default.
        seed: master seed for subsets, transform parameters and methods.
        steps: optimisation steps for every method (overrides the profile).
        profile: ``auto`` (quick on CPU, paper on GPU), ``quick`` or ``paper``.
        batch_size: images inverted together, or ``"auto"`` (from free GPU memory; 8 on the CPU).
        precision: ``auto`` (on CUDA each method at the fastest precision that held the parity test, see
            ``methods.base.Preset.gpu_precisions``; fp32 on the CPU), ``fp32``, ``tf32`` or ``bf16`` (``bench.accel``).
        compile: ``torch.compile`` the generator's synthesis and the perceptual distance (``bench.accel``):
            True, False, or ``"auto"``
            (on CUDA, for each method whose optimisation is long enough to repay compiling it,
            ``bench.accel.compile_pays``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        run_dir: output folder; an existing run with the same configuration is resumed.
        metrics: metric names; empty = all defaults.
        perceptual: perceptual distance for the methods' losses: auto, lpips-vgg, lpips-alex, world, none.
        lpips_weights: folder or file(s) with torchvision AlexNet/VGG16 weights for LPIPS.
        max_samples: sample images kept per transform for the figures.
        save_latents: keep each item's latent codes.
        method_params: per-method hyper-parameter overrides, e.g. ``{"im2s": {"lr": 0.02}}``.
        encoders: encoder files for methods that need one, e.g. ``{"fwplus16": "enc16.safetensors"}``
            (the embedded world ships its own).
        pnorm_stats: P-norm+ statistics file for the generator (``bench zoo pnorm-stats``).
        edits: edits applied to every inversion, ``NAME_OR_FILE:STRENGTHS`` (e.g. ``smile:-2,2``).
    """

    methods: str = "im2s"
    transforms: tuple[str, ...] = ()
    protocol: str | None = None
    include_identity: bool = True
    fill: str = "reflection"
    resample: str = "bilinear"
    generator: str | None = None
    data: str | None = None
    n: int | None = None
    seed: int = 0
    steps: int | None = None
    profile: str = "auto"
    batch_size: int | str = "auto"
    precision: str = "auto"
    compile: bool | str = "auto"
    device: str = "auto"
    run_dir: str | None = None
    metrics: tuple[str, ...] = ()
    perceptual: str = "auto"
    lpips_weights: str | None = None
    max_samples: int = 8
    save_latents: bool = True
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    encoders: dict[str, str] = field(default_factory=dict)
    pnorm_stats: str | None = None
    edits: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


# settings that change how fast a run goes, not what it computes (the same values within float rounding,
# tests/accel/test_compile.py): a resume or a regression check with another choice is the same configuration
SPEED_ONLY_KEYS = ("compile",)


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` (as read from JSON/TOML or passed to RunConfig) fits the field type ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_matches(value, a) for a in args)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin is tuple:  # tuple[str, ...]: files give lists
        return isinstance(value, list | tuple) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_matches(k, args[0]) and _matches(v, args[1])
                                               for k, v in value.items())
    if hint is int:  # bool is an int subclass, but true/false is never a count or a seed
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def check_types(values: Mapping[str, Any], where: str) -> None:
    """Raise ValueError naming ``where`` and the key if a value does not fit its RunConfig field's type.

    A plain string is accepted for the tuple fields (``transforms``, ``metrics``), as ``make_config`` does.
    """
    hints = typing.get_type_hints(RunConfig)
    for key, value in values.items():
        hint = hints.get(key)
        if hint is None:
            continue
        if typing.get_origin(hint) is tuple and isinstance(value, str):
            value = (value,)
        if key == "batch_size" and isinstance(value, str) and value != "auto":
            raise ValueError(f"{where}: batch_size must be a whole number >= 1 or 'auto', got {value!r}")
        if key == "compile" and isinstance(value, str) and value != "auto":
            raise ValueError(f"{where}: compile must be true, false or 'auto', got {value!r}")
        if not _matches(value, hint):
            text = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
            raise ValueError(f"{where}: {key} must be {text}, got {value!r} ({type(value).__name__})")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML config file into a dict of RunConfig fields (unknown keys raise)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"config file {path}: not a text file (byte {err.start} is not UTF-8); expected JSON "
                         "or TOML") from None
    except OSError as err:
        raise ValueError(f"config file {path}: cannot be read ({err.strerror or err})") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise ValueError(f"config file {path}: cannot be parsed ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: expected a table of options, got a {type(data).__name__}")
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"config file {path}: unknown keys {unknown}; known keys: {sorted(known)}")
    check_types(data, f"config file {path}")
    return data


def make_config(cli: dict[str, Any], config_file: str | Path | None = None) -> RunConfig:
    """Merge defaults < config file < CLI values (CLI entries that are None or empty are 'not given')."""
    merged: dict[str, Any] = {}
    if config_file is not None:
        merged.update(load_config_file(config_file))
    merged.update({k: v for k, v in cli.items() if v is not None and v != ()})
    for key in ("transforms", "metrics", "edits"):
        if key in merged and isinstance(merged[key], str):
            merged[key] = (merged[key],)
        if key in merged:
            merged[key] = tuple(merged[key])
    return RunConfig(**merged)


def resolve(config: RunConfig, *, device_type: str) -> RunConfig:
    """Apply the profile and validate simple fields; returns a new config.

    Args:
        config: the merged configuration.
        device_type: ``"cpu"`` or ``"cuda"`` (the resolved device), used by ``profile="auto"``.
    """
    check_types(config.to_dict(), "run configuration")
    profile = config.profile
    if profile == "auto":
        profile = "paper" if device_type == "cuda" else "quick"
    if profile not in PROFILES:
        raise ValueError(f"--profile {config.profile!r}: expected auto, {', '.join(PROFILES)}")
    if config.batch_size != "auto" and (not isinstance(config.batch_size, int) or config.batch_size < 1):
        raise ValueError(f"--batch-size must be a whole number >= 1 or auto, got {config.batch_size!r}")
    if config.precision not in PRECISION_CHOICES:
        raise ValueError(f"--precision {config.precision!r}: expected one of {', '.join(PRECISION_CHOICES)}")
    if config.precision not in ("auto", "fp32") and device_type != "cuda":
        raise ValueError(f"--precision {config.precision} needs a CUDA device; this run is on the {device_type}")
    if config.steps is not None and config.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {config.steps}")
    if config.n is not None and config.n < 1:
        raise ValueError(f"--n must be >= 1, got {config.n}")
    check_data_options(config, RunConfig())
    n = config.n if config.n is not None else PROFILES[profile]["n"]
    decided, count = stated_count(config.data)
    if config.n is None and decided:
        n = count  # the spec says how many (procfaces:100, folder:D:50); a made set is run whole
    return replace(config, profile=profile, n=n)


def method_overrides(config: RunConfig, method: str, default_steps: int) -> dict[str, Any]:
    """Hyper-parameter overrides for one method: steps from --steps or the profile cap, then method_params."""
    out: dict[str, Any] = {}
    cap = PROFILES[config.profile]["max_steps"]
    if config.steps is not None and default_steps > 0:
        out["steps"] = config.steps
    elif cap is not None and default_steps > cap:
        out["steps"] = cap
    out.update(config.method_params.get(method, {}))
    return out
