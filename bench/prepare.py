"""The prepare stage of a run: everything resolved once before the loop.

Device, generator, data, transforms, perceptual network, metrics, edits, the fast path (``bench.accel``) and
what each method needs (encoders, P-norm+ statistics, batch size).

``prepare(config)`` resolves all of it once into a :class:`Prepared`; ``bench.runner`` then runs the loop.
"""

from __future__ import annotations

import hashlib
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from bench.accel import Accel, probe_batch_size, resolve_accel
from bench.config import RunConfig, method_overrides, resolve
from bench.data import Item, open_source
from bench.editing import edit_jobs
from bench.encoders.psp_release import load_generator_file
from bench.metrics import DEFAULT_METRICS, Metric, build_metrics
from bench.perceptual import PERCEPTUAL_CHOICES, lpips_weight_files, resolve_perceptual
from bench.world import world256
from bench.world.defaults import default_data_spec, default_generator
from bench.world.perceptual import NAME as WORLD_METRIC
from methods import build_method, expand_method_names, get_preset
from methods.base import check_overrides
from methods.overrides import resolve_method_params
from transforms import (
    FILL_MODES,
    REFERENCE_RESOLUTION,
    TransformSpec,
    expand_protocol,
    parse_transforms,
)
from transforms.geometric import RESAMPLE_MODES

WORLD256 = world256.NAME  # the 256 px embedded world, named by --generator
WORLD64 = "world64"  # the 64 px embedded world by name: the default, except for protocol runs


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA device if there is one, else the CPU; others are checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return dev


def stable_seed(*parts: object) -> int:
    """A seed in [0, 2**31) from a stable hash of the parts (independent of Python's hash salt)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def transform_specs(config: RunConfig, resolution: int) -> list[TransformSpec]:
    """The run's transforms: identity (if asked), the protocol's grid, then the given specs; no repeats."""
    specs: list[TransformSpec] = []
    if config.include_identity:
        specs += parse_transforms("identity")
    if config.protocol:
        specs += expand_protocol(config.protocol, resolution)
    if config.transforms:
        specs += parse_transforms(list(config.transforms))
    out: list[TransformSpec] = []
    for s in specs:
        if s.is_identity and any(o.is_identity for o in out):
            continue
        if s.label not in {o.label for o in out}:
            out.append(s)
    return out


def check_names(config: RunConfig) -> None:
    """Check method names, transform specs, protocol, fill and perceptual choice without loading anything.

    Raises:
        ValueError: naming the option and, where there is one, the closest valid name.
    """
    expand_method_names(config.methods)
    if config.transforms:
        parse_transforms(list(config.transforms))
    if config.protocol:
        expand_protocol(config.protocol, REFERENCE_RESOLUTION)
    if config.fill not in FILL_MODES:
        raise ValueError(f"--fill {config.fill!r}: expected one of {', '.join(FILL_MODES)}")
    if config.resample not in RESAMPLE_MODES:
        raise ValueError(f"--resample {config.resample!r}: expected one of {', '.join(RESAMPLE_MODES)}")
    if config.perceptual not in PERCEPTUAL_CHOICES:
        raise ValueError(f"--perceptual {config.perceptual!r}: expected one of {', '.join(PERCEPTUAL_CHOICES)}")
    method_params(config)


def method_params(config: RunConfig) -> dict[str, dict]:
    """``--param`` overrides per preset, aliases expanded (``methods.overrides.resolve_method_params``).

    Raises:
        ValueError: an unknown method, a method that is not in this run, an unknown parameter or a value
            that does not fit it (``methods.base.check_overrides``), naming the ``--param`` entry.
    """
    return resolve_method_params(config.methods, config.method_params, expand_method_names, check_overrides)


@dataclass
class Prepared:
    """Everything a run needs, resolved once."""

    config: RunConfig
    device: torch.device
    generator: torch.nn.Module
    items: list[Item]
    specs: list[TransformSpec]
    methods: list[str]
    perceptual: object | None
    metrics: list[Metric]
    descriptions: dict[str, str]
    edits: list = field(default_factory=list)
    attribute_net: torch.nn.Module | None = None
    attributes: tuple[str, ...] = ()
    # method -> item id -> latents of the aligned (identity) pass, kept for the consistency metric
    aligned_latents: dict = field(default_factory=dict)
    # the run's memory layout and compilation (precision aside: each method's is in ``accels``)
    accel: Accel = field(default_factory=Accel)
    # method -> its fast path (``--precision auto`` differs per method: ``resolve_accel``)
    accels: dict = field(default_factory=dict)
    # method -> batch size that fits (from --batch-size auto's probe, or halved after an out-of-memory)
    batch_sizes: dict = field(default_factory=dict)
    # method -> why it is not run on this generator (a world that cannot hold its base-code proportion)
    skipped: dict = field(default_factory=dict)


def prepare(config: RunConfig, log: Callable[[str], None] = print) -> Prepared:
    """Resolve device, profile, generator, data, transforms, methods, perceptual distance and metrics."""
    device = resolve_device(config.device)
    config = resolve(config, device_type=device.type)
    check_names(config)
    config, note = choose_world(config)
    if note:
        log(note)
    params, skipped = world_proportions(config, method_params(config))
    config = replace(config, method_params=params)
    methods = [m for m in expand_method_names(config.methods) if m not in skipped]
    for name, why in skipped.items():
        log(f"{name}: not run on --generator {config.generator}: {why}")
    if config.generator:
        generator = load_generator_file(config.generator)  # also a pSp/e4e checkpoint's decoder
    else:
        generator = default_generator()
    generator = generator.to(device).eval().requires_grad_(False)
    world = is_world(config)
    attach_pnorm_stats(generator, use_world=world, path=config.pnorm_stats)  # world256 shares the mapping
    data_spec = config.data or default_data_spec(config.n)
    source = open_source(data_spec, resolution=generator.resolution, n=config.n, seed=config.seed,
                         generator=generator, on_error=log)
    items = list(source)
    if not items:
        raise ValueError(f"--data {data_spec}: no readable images")
    specs = transform_specs(config, generator.resolution)
    perceptual, perceptual_text = resolve_perceptual(config.perceptual, device, config.lpips_weights,
                                                     world_domain=world)
    default_metrics = [*DEFAULT_METRICS, WORLD_METRIC] if world else list(DEFAULT_METRICS)
    metrics = build_metrics(list(config.metrics) or default_metrics, device=device,
                            lpips_weights=lpips_weight_files(config.lpips_weights))
    descriptions = {"generator": generator.description, "data": f"{data_spec}: {source.description}",
                    "perceptual": perceptual_text}
    prep = Prepared(config, device, generator, items, specs, methods, perceptual, metrics, descriptions,
                    skipped=skipped, accel=resolve_accel(config.precision, device, config.compile),
                    accels={name: resolve_accel(config.precision, device, config.compile,
                                                get_preset(name).gpu_precisions) for name in methods})
    prep.accel.prepare(generator, perceptual)
    if config.edits:
        prep.edits = edit_jobs(config.edits, generator)
        if world:
            from bench.world.perceptual import load_attribute_net
            from bench.world.procfaces import ATTRIBUTES

            prep.attribute_net, _ = load_attribute_net(device)
            prep.attributes = ATTRIBUTES
    return prep


def batch_size_for(prep: Prepared, name: str, pending: list, log: Callable[[str], None] = print) -> int:
    """Images per batch for method ``name``: --batch-size, or (auto) probed from free memory once per method.

    ``pending`` is the method's pending work (units or items); the batch never exceeds its length.
    """
    if prep.config.batch_size != "auto":
        return int(prep.config.batch_size)
    if name not in prep.batch_sizes:
        preset = get_preset(name)
        overrides = method_overrides(prep.config, name, preset.default_steps)
        probe = build_method(name, overrides | {"steps": min(2, preset.default_steps)},
                             **method_resources(preset, prep))
        first = pending[0]
        sample = getattr(first, "item", first).image[None].to(prep.device)  # a work unit or an item

        def invert(b: int) -> None:
            with prep.accels[name].context(prep.device):
                probe.invert(sample.expand(b, -1, -1, -1).contiguous(), prep.generator, seeds=list(range(b)),
                             perceptual=prep.perceptual)

        size, note = probe_batch_size(invert, prep.device, limit=len(pending))
        prep.batch_sizes[name] = size
        log(f"batch size for {name}: {note}")
    return prep.batch_sizes[name]


def is_world(config: RunConfig) -> bool:
    """Whether the run's generator is an embedded world (the 64 px default or ``world256``).

    The world domain's perceptual distance, metric, attribute net and P-norm+ statistics then apply.
    """
    return config.generator is None or config.generator == WORLD256


def choose_world(config: RunConfig) -> tuple[RunConfig, str]:
    """Which embedded world a run without a generator file uses, and a line saying so ('' if nothing to say).

    A protocol run (``--protocol``) uses the 256 px world, whose F/W+ base codes have the paper's proportions
    (at 64 px a 16x16 base code holds 5.3x as many numbers as the image and stores any image, so its
    robustness would say nothing about the generator). Other runs use the 64 px world (the CPU default).
    ``--generator world64`` names the 64 px world (recorded as no generator, as before); ``world256`` the
    other. A file of either name in the working folder is read as a file.
    """
    if config.generator == WORLD64 and not Path(WORLD64).exists():
        return replace(config, generator=None), ""
    if config.generator is None and config.protocol:
        return replace(config, generator=WORLD256), (
            f"--protocol {config.protocol} on the embedded world: the 256 px world (--generator {WORLD256}), whose "
            f"F/W+ base codes have the paper's proportions; --generator {WORLD64} runs the 64 px world")
    return config, ""


# On the 256 px world the F/W+ presets take BDInvert's proportions rather than their absolute sizes: the
# paper's 16x16 base code is 1/64 of a 1024 px side, so fwplus16 runs a 4x4 code there (1/64 of 256 px). The
# paper's 8x8 (1/128) would need a 2x2 code, which a StyleGAN2 starting at 4x4 does not have.
WORLD_BASE_RES = {WORLD256: {"fwplus16": 4}}
WORLD_BASE_MISSING = {WORLD256: {"fwplus8": "the paper's 8x8 proportion (1/128 of the side) needs a 2x2 base code, "
                                            "and the 256 px world starts at 4x4"}}


def world_proportions(config: RunConfig, params: dict[str, dict]) -> tuple[dict[str, dict], dict[str, str]]:
    """``params`` with the world's base-code size for each F/W+ preset that has one (a given base_res wins).

    Returns:
        (params, skipped): the presets whose paper proportion this world cannot hold, each with the reason;
        the run leaves them out and records why (``config.json``, report header).

    Raises:
        ValueError: when every method of the run would be left out (naming the alternative).
    """
    sizes, missing = WORLD_BASE_RES.get(config.generator, {}), WORLD_BASE_MISSING.get(config.generator, {})
    out = {k: dict(v) for k, v in params.items()}
    skipped: dict[str, str] = {}
    names = expand_method_names(config.methods)
    for name in names:
        if name in sizes:
            out.setdefault(name, {}).setdefault("base_res", sizes[name])
        elif name in missing and "base_res" not in out.get(name, {}):
            skipped[name] = (f"{missing[name]}; fwplus16 runs the paper's 16x16 proportion here (4x4), or set "
                             f"--param {name}.base_res=S (the report states its fraction)")
    if skipped and len(skipped) == len(names):
        name = next(iter(skipped))
        raise ValueError(f"--methods {name} on --generator {config.generator}: {skipped[name]}")
    return out, skipped


def shipped_world_encoder(name: str, generator: str | None, base_res: int | None = None) -> tuple[Path | None, bool]:
    """The shipped encoder a world run of method ``name`` uses, and whether it is lifted (``lift_encoder``).

    The 64 px world (``generator`` None) has ``{name}_encoder``. On the 256 px world an F/W+ preset's encoder
    is named by the base size it runs (``fwplus16`` runs 4x4: ``fwplus4_encoder_world256``); pSp and IDinvert
    use the 64 px world's encoders, lifted. ``(None, False)`` where nothing is shipped.
    """
    from bench.world import zoo

    if generator is None:
        return zoo.asset_path(f"{name}_encoder"), False
    if generator != WORLD256:
        return None, False
    base = base_res if base_res is not None else WORLD_BASE_RES[WORLD256].get(name)
    path = zoo.asset_path((f"fwplus{base}" if base is not None and name.startswith("fwplus") else name)
                          + f"_encoder_{WORLD256}")
    if path is None and name in world256.LIFTED_ENCODERS:
        return zoo.asset_path(f"{name}_encoder"), True
    return path, False


def method_resources(preset, prep: Prepared) -> dict:
    """What a preset needs besides its parameters: its encoder, from --encoder or the world's zoo."""
    if not preset.needs_encoder:
        return {}
    from bench.encoders import load_encoder
    from bench.encoders.provenance import check_trained_for, split_encoder_value

    value = prep.config.encoders.get(preset.name)
    path, waive = split_encoder_value(value) if value is not None else (None, False)
    lift = False
    if path is None and is_world(prep.config):
        path, lift = shipped_world_encoder(preset.name, prep.config.generator,
                                           prep.config.method_params.get(preset.name, {}).get("base_res"))
    if path is None:
        raise ValueError(f"method {preset.name!r} needs an encoder trained for this generator; pass "
                         f"--encoder {preset.name}=PATH, or make one: bench train-encoder {preset.name} "
                         f"--generator {prep.config.generator or 'G'} --out FILE (bench zoo ls)")
    encoder = load_encoder(path, prep.device, method=preset.name)
    if lift:
        encoder = world256.lift_encoder(encoder, prep.generator.num_ws)
    check_trained_for(encoder, prep.generator, str(path), preset.name, waive)
    _check_encoder_fits(preset.name, encoder, prep, path)
    return {"encoder": encoder}


def _check_encoder_fits(name: str, encoder, prep: Prepared, path) -> None:
    """Encode one blank image with a zero-step inversion, so that a wrong encoder fails now, naming its file."""
    blank = torch.zeros(2, 3, prep.generator.resolution, prep.generator.resolution, device=prep.device)
    probe = {"steps": 0} | ({"pnorm_weight": 0.0} if "pnorm_weight" in typing.get_type_hints(
        get_preset(name).cls.Params) else {})  # no P-norm+ statistics needed for the check
    probe |= {k: v for k, v in prep.config.method_params.get(name, {}).items() if k == "base_res"}
    try:
        with torch.no_grad():
            build_method(name, probe, encoder=encoder).invert(blank, prep.generator, seeds=[0, 1],
                                                                     perceptual=None)
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"--encoder {name}={path}: does not fit this generator ({prep.generator.resolution} px, "
                         f"{prep.generator.num_ws} ws): {err}") from None


def attach_pnorm_stats(generator, use_world: bool, path: str | None = None) -> None:
    """Attach P-norm+ statistics: the given file, else the world's shipped ones for the world generator.

    Without either, methods compute them on first use (1M samples).
    """
    from bench.world import zoo

    path = path or (zoo.asset_path("pnorm_stats") if use_world else None)
    if path is None:
        return
    if Path(path).is_dir() or str(path).endswith(".npy"):  # BDInvert's pnorm/<model>/ folder
        from bench.encoders.bdinvert import load_bdinvert_pnorm

        _attach_stats(generator, load_bdinvert_pnorm(path), path)
        return
    from safetensors import safe_open

    from methods.pnorm import PNormStats

    try:
        with safe_open(str(path), framework="pt") as fh:
            t = {k: fh.get_tensor(k) for k in fh.keys()}
            samples = int((fh.metadata() or {}).get("samples", 0))
        stats = PNormStats(t["mean"].float(), t["eigvecs"].float(), t["eigvals"].float(), samples=samples)
    except Exception as err:  # noqa: BLE001 - safetensors' own error type too: any unreadable file is named
        raise ValueError(f"--pnorm-stats {path}: not a P-norm+ statistics file ({err})") from err
    _attach_stats(generator, stats, path)


def _attach_stats(generator, stats, path) -> None:
    if stats.mean.shape != (generator.w_dim,):
        raise ValueError(f"--pnorm-stats {path}: statistics are for w_dim {stats.mean.shape[0]}, "
                         f"the generator has {generator.w_dim}")
    generator.pnorm_stats = stats
