"""``bench``: the command line, a thin shell over the Python API (``bench.runner.run`` and friends)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import fields
from pathlib import Path

import click

from bench.choices import PRECISION_CHOICES
from bench.config import PROFILES, RunConfig, make_config

DEFAULTS = RunConfig()


class _BatchSize(click.ParamType):
    """A whole number >= 1, or ``auto``."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "auto":
            return value
        try:
            number = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a whole number nor auto", param, ctx)
        if number < 1:
            self.fail(f"{number} must be >= 1 (or auto)", param, ctx)
        return number


BATCH_SIZE = _BatchSize()


def _fail(err: Exception) -> None:
    raise click.ClickException(str(err)) from err


def _check_names_fast(config: RunConfig) -> None:
    """Refuse an unknown method, a bad transform spec or protocol before torch is imported (it takes seconds)."""
    from bench.choices import check_names
    from bench.dataspec import check_data_options

    check_names(config.methods, config.transforms, config.protocol, config.metrics)
    if config.method_params:
        from bench.choices import check_method_params

        check_method_params(config.methods, config.method_params)
    check_data_options(config, DEFAULTS)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="gan-inversion-bench")
def main() -> None:
    """Benchmark StyleGAN inversion methods on translated, rotated and scaled images."""


@main.command()
@click.option("--methods", default=None, help=f"Comma list of methods or aliases (bench ls methods). "
              f"[default: {DEFAULTS.methods}]")
@click.option("--transform", "transforms", multiple=True, help="Transform spec, repeatable (bench ls transforms).")
@click.option("--protocol", default=None, help="Named transform grid, e.g. bdinvert-table1 (bench ls protocols).")
@click.option("--identity/--no-identity", "include_identity", default=None,
              help="Also run the untransformed images as a baseline.  [default: identity]")
@click.option("--fill", type=click.Choice(["reflection", "zeros", "border"]), default=None,
              help=f"Border fill of the transforms.  [default: {DEFAULTS.fill}]")
@click.option("--resample", type=click.Choice(["bilinear", "bicubic", "lanczos3"]), default=None,
              help="How image sources are warped (lanczos3: band-limited); procedural faces are rendered "
              f"transformed instead.  [default: {DEFAULTS.resample}]")
@click.option("--generator", default=None, help="Generator checkpoint: rosinality or pSp/e4e .pt, NVIDIA "
              "StyleGAN2-ADA .pkl, genforce .pth (StyleGAN2, StyleGAN v1), .safetensors (bench zoo inspect FILE); "
              "or an embedded world: world64, world256.  [default: the 64 px world; with --protocol the 256 px "
              "world, whose F/W+ base codes have the paper's proportions]")
@click.option("--data", default=None, help="synthetic:N, folder:PATH, celebahq:PATH[,split=FILE], lsun:PATH, "
              "set:PATH, procfaces:N.  [default: procfaces (held-out faces)]")
@click.option("--n", "--items", "n", type=click.IntRange(min=1), default=None,
              help="Number of items (seeded subset); --items is the same option (torchrun's parser takes --n).")
@click.option("--seed", type=int, default=None, help=f"Master seed.  [default: {DEFAULTS.seed}]")
@click.option("--steps", type=click.IntRange(min=0), default=None, help="Optimisation steps for every method.")
@click.option("--profile", type=click.Choice(["auto", *PROFILES]), default=None,
              help="quick: capped steps, 8 items (CPU default); paper: published settings, 50 items (GPU).")
@click.option("--batch-size", type=BATCH_SIZE, default=None,
              help="Images inverted together, or auto: from free GPU memory (8 on the CPU).  [default: auto]")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default=None,
              help="Inversion arithmetic. auto: on CUDA each method at the fastest precision that held the GPU parity "
                   "test (bf16; fp32 for psp), fp32 on the CPU.  [default: auto]")
@click.option("--compile/--no-compile", default=None,
              help="torch.compile the generator and the perceptual distance (fuses their elementwise work: about 2x on "
                   "CUDA; compiling takes about "
                   "a minute). auto: on CUDA, each method whose run is long enough to repay it.  [default: auto]")
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N.  [default: auto]")
@click.option("--run-dir", default=None, help="Output folder; re-running with it resumes.  [default: runs/DATE]")
@click.option("--metric", "metrics", multiple=True, help="Metric name, repeatable (bench ls metrics). [default: all]")
@click.option("--perceptual", type=click.Choice(["auto", "lpips-vgg", "lpips-alex", "world", "none"]), default=None,
              help="Perceptual distance in the methods' losses.  [default: auto]")
@click.option("--lpips-weights", default=None, help="Folder or file with torchvision AlexNet/VGG16 weights.")
@click.option("--pnorm-stats", default=None, help="P-norm+ statistics file (bench zoo pnorm-stats); "
              "default: shipped for the embedded world, else computed on first use (1M samples).")
@click.option("--edit", "edits", multiple=True, metavar="NAME_OR_FILE:STRENGTHS",
              help="Edit every inversion, repeatable: a world attribute or an InterFaceGAN .npy/.pt direction, "
                   "e.g. smile:-2,2 or age:-2..2/5 (5 strengths from -2 to 2).")
@click.option("--max-samples", type=click.IntRange(min=0), default=None,
              help=f"Sample images kept per transform for the figures.  [default: {DEFAULTS.max_samples}]")
@click.option("--save-latents/--no-save-latents", default=None, help="Keep each item's latent codes. [default: yes]")
@click.option("--param", "params", multiple=True, metavar="METHOD.KEY=VALUE",
              help="Method hyper-parameter override, repeatable, e.g. im2s.lr=0.02 (value parsed as JSON).")
@click.option("--encoder", "encoder_files", multiple=True, metavar="METHOD=PATH",
              help="Encoder file for a method that needs one, e.g. fwplus16=enc16.safetensors.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="JSON or TOML file of run options (the CLI overrides it).")
@click.option("--dry-run", is_flag=True, help="Print the resolved configuration and exit.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(config_file: str | None, dry_run: bool, quiet: bool, params: tuple[str, ...],
        encoder_files: tuple[str, ...], **options) -> None:
    """Invert (transformed) images with each method and score the reconstructions."""
    try:
        if params:
            options["method_params"] = parse_method_params(params)
        if encoder_files:
            options["encoders"] = dict(_key_value(e, "--encoder", "METHOD=PATH") for e in encoder_files)
        config = make_config(options, config_file)
        _check_names_fast(config)
        from bench.config import resolve
        from bench.prepare import choose_world
        from bench.runner import check_names, resolve_device
        from bench.runner import run as run_api

        if dry_run:
            resolved = resolve(config, device_type=resolve_device(config.device).type)
            check_names(resolved)
            resolved = choose_world(resolved)[0]
            click.echo(json.dumps(resolved.to_dict(), indent=2))
            return
        run_dir = run_api(config, progress=not quiet, log=lambda m: click.echo(m, err=True))
    except (ValueError, OSError) as err:
        _fail(err)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the job
        click.echo(f"results written to {run_dir}  (next: bench report {run_dir})")


@main.command()
@click.argument("run_dirs", nargs=-1, type=click.Path(file_okay=False))
@click.option("--out", default=None, help="Report folder.  [default: RUN_DIR/report]")
@click.option("--html/--no-html", "with_html", default=True,
              help="Also write report.html: tables and figures in one file that opens offline.")
@click.option("--pool", is_flag=True,
              help="Merge several runs into one cell per method and transform (refused when their steps, generator, "
                   "perceptual, data or other settings differ). Default: each run keeps its rows, METHOD [RUN].")
@click.option("--force", is_flag=True, help="With --pool: pool runs whose settings differ (the report lists them).")
def report(run_dirs: tuple[str, ...], out: str | None, with_html: bool, pool: bool, force: bool) -> None:
    """Write tables (CSV, Markdown, LaTeX, HTML) and figures for one or more runs (default: the latest)."""
    from reports import write_report
    from reports.html import write_html

    if force and not pool:
        raise click.UsageError("--force goes with --pool only")
    dirs = [Path(d) for d in run_dirs] or [_latest_run()]
    out_dir = Path(out) if out else dirs[0] / "report"
    try:
        _repair(dirs)
        paths = write_report(dirs, out_dir, pool=pool, force=force)
        if with_html:
            figures = [p for p in paths.values() if p.suffix.lower() == ".png"]
            paths["report.html"] = write_html(dirs, out_dir / "report.html", figures, pool=pool, force=force)
    except (ValueError, OSError) as err:
        _fail(err)
    for name, path in paths.items():
        click.echo(f"{name}: {path}")


def _repair(dirs: list[Path]) -> None:
    """Rebuild each run's tables from its journal first (a killed run may have left a torn append)."""
    from bench.results import repair_tables

    for d in dirs:
        repair_tables(d)


def _key_value(text: str, option: str, form: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ValueError(f"{option} {text!r}: expected {form}")
    return key.strip(), value.strip()


def parse_method_params(items: tuple[str, ...]) -> dict[str, dict]:
    """``("im2s.lr=0.02", ...)`` -> ``{"im2s": {"lr": 0.02}}`` (values parsed as JSON, else kept as text)."""
    out: dict[str, dict] = {}
    for item in items:
        key, value = _key_value(item, "--param", "METHOD.KEY=VALUE")
        method, dot, name = key.partition(".")
        if not dot or not name:
            raise ValueError(f"--param {item!r}: expected METHOD.KEY=VALUE, e.g. im2s.lr=0.02")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(method, {})[name] = parsed
    return out


def _latest_run() -> Path:
    runs = sorted(p for p in Path("runs").glob("*") if (p / "results.csv").is_file())
    if not runs:
        raise click.ClickException("no run found under ./runs; pass a run directory")
    return max(runs, key=lambda p: (p / "results.csv").stat().st_mtime)


@main.command("make-set")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--data", default=None, help="Image source spec (as for bench run).  [default: procfaces]")
@click.option("--transform", "transforms", multiple=True, help="Transform spec, repeatable.")
@click.option("--protocol", default=None, help="Named transform grid.")
@click.option("--identity/--no-identity", "include_identity", default=None, help="Include untransformed copies.")
@click.option("--fill", type=click.Choice(["reflection", "zeros", "border"]), default=None)
@click.option("--resample", type=click.Choice(["bilinear", "bicubic", "lanczos3"]), default=None,
              help="How image sources are warped; procedural faces are rendered transformed.")
@click.option("--generator", default=None, help="Generator (for synthetic: data and the resolution).")
@click.option("--n", type=click.IntRange(min=1), default=None, help="Number of items.")
@click.option("--seed", type=int, default=None, help="Master seed.")
@click.option("--device", default=None, help="auto, cpu, cuda.")
def make_set(out_dir: str, **options) -> None:
    """Write a transformed set to disk: PNG images, validity masks, and a CSV of parameters and matrices."""
    try:
        config = make_config({**options, "profile": "quick"})
        _check_names_fast(config)
        from bench.makeset import make_set as make_set_api

        count = make_set_api(config, Path(out_dir), log=lambda m: click.echo(m, err=True))
    except (ValueError, OSError) as err:
        _fail(err)
    click.echo(f"wrote {count} images to {out_dir}  (use it with: bench run --data set:{out_dir})")


@main.command("ls")
@click.argument("what", type=click.Choice(["methods", "transforms", "metrics", "protocols", "config"]))
def ls(what: str) -> None:
    """List methods, transforms (grammar), metrics, protocols, or the run options."""
    from bench import listing

    click.echo(getattr(listing, what)())


@main.command()
@click.option("--config", "config_name", default="world",
              help="world, world256 (the embedded 64 and 256 px worlds), or tiny, config-f-256, config-f-1024 "
                   "(random weights, for timing only).")
@click.option("--methods", default="im2s,w,pnorm,fwplus8,fwplus16", help="Comma list of optimisation methods.")
@click.option("--batch", type=BATCH_SIZE, default=32, help="Batch size of the batched run, or auto (free memory).")
@click.option("--steps", default="5,25", help="LO,HI optimiser steps; the rate is taken from their difference.")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto",
              help="Fast-path precision (auto: per method, as in bench run); one image at a time is also timed "
                   "in fp32.")
@click.option("--compile", "compile_", is_flag=True,
              help="torch.compile the generator and the perceptual distance on the fast path.")
@click.option("--single/--no-single", default=True, help="Also time one image at a time (fast path and fp32).")
@click.option("--device", default="auto", help="auto, cpu, cuda.")
@click.option("--min-seconds", type=click.FloatRange(min=0.001), default=0.1,
              help="Shortest timed difference a rate is taken from; shorter runs get more steps (up to 20000), "
                   "else the method is refused.")
def speed(config_name: str, methods: str, batch, steps: str, precision: str, compile_: bool, single: bool,
          device: str, min_seconds: float) -> None:
    """Image-steps per second of each method, batched vs one image at a time, FLOPs and memory."""
    from bench.choices import expand_method_names

    try:
        parts = steps.split(",")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or not int(parts[0]) < int(parts[1]):
            raise ValueError(f"--steps {steps!r}: expected LO,HI with 0 <= LO < HI")
        lo, hi = (int(p) for p in parts)
        names = expand_method_names(methods)  # before the heavy imports, so that a typo answers at once
        from bench import speed as sp
        from bench.accel import describe_accels, resolve_accel
        from bench.runner import resolve_device
        from methods import get_preset

        dev = resolve_device(device)
        accels = {n: resolve_accel(precision, dev, compile_, get_preset(n).gpu_precisions) for n in names}
        params, skipped = sp.config_params(config_name, names)
        gen, perceptual, desc = sp.build_timing_setup(config_name, dev)
        click.echo(f"device: {dev}{' (' + torch_device_name(dev) + ')' if dev.type == 'cuda' else ''}; {desc}; "
                   f"fast path: {describe_accels(accels)}")
        for n, why in skipped.items():
            click.echo(f"{n}: not timed on {config_name}: {why}", err=True)
        rows = [sp.time_method(n, gen, perceptual, batch, (lo, hi), dev, accels[n],
                               log=lambda m: click.echo(m, err=True), single=single, floor_s=min_seconds,
                               params=params.get(n))
                for n in names if n not in skipped]
        peaks = {a.precision: sp.matmul_peak_tflops(dev, a.precision) for a in accels.values()}
        click.echo(sp.format_rows(rows, peaks))
    except (ValueError, OSError) as err:
        _fail(err)


def torch_device_name(dev) -> str:
    """The CUDA device's name."""
    import torch

    return torch.cuda.get_device_name(dev)


@main.group()
def zoo() -> None:
    """The embedded world's shipped weights."""


@zoo.command("ls")
@click.option("--generator", default=None, help="Show which methods are ready for this generator.  "
              "[default: the embedded world]")
@click.option("--encoder", "encoder_files", multiple=True, metavar="METHOD=PATH",
              help="Check an encoder file for a method (loads it, compares the generator hash it records).")
def zoo_ls(generator: str | None, encoder_files: tuple[str, ...]) -> None:
    """Show what is shipped, what a user can add, and which methods are ready for the generator."""
    from bench import listing

    try:
        encoders = dict(_key_value(e, "--encoder", "METHOD=PATH") for e in encoder_files)
        click.echo(listing.zoo(generator, encoders))
    except (ValueError, OSError) as err:
        _fail(err)


@zoo.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False))
def zoo_inspect(file: str) -> None:
    """Say what a generator file is: format, family, resolution, w_dim, num_ws, mapping depth, channels, w_avg."""
    from bench.generators.describe import format_inspection, inspect_generator

    try:
        click.echo(format_inspection(inspect_generator(file)))
    except (ValueError, OSError) as err:
        _fail(err)


@zoo.command("convert")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
def zoo_convert(file: str, out: str) -> None:
    """Convert a generator (rosinality .pt, NVIDIA .pkl, genforce .pth) to the project's .safetensors."""
    from bench.generators.describe import convert_generator

    try:
        gen = convert_generator(file, out)
    except (ValueError, OSError) as err:
        _fail(err)
    click.echo(f"wrote {out}: {gen.description}  (use: bench run --generator {out})")


@zoo.command("verify")
def zoo_verify() -> None:
    """Check the shipped files against the manifest's SHA-256 hashes."""
    from bench.world.zoo import verify

    problems = verify()
    for p in problems:
        click.echo(p, err=True)
    if problems:
        sys.exit(1)
    click.echo("all shipped assets match the manifest")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--baseline", "baseline_file", required=True, type=click.Path(dir_okay=False),
              help="Baseline JSON file (committed; see bench/check.py for its format).")
@click.option("--write-baseline", is_flag=True,
              help="Write the baseline from RUN_DIR instead of checking (tolerances already in the file are kept).")
@click.option("--how", default=None, metavar="COMMAND",
              help="With --write-baseline: the exact command that made RUN_DIR, recorded in the file.")
@click.option("--changed-only", is_flag=True, help="List only the cells whose status is not ok.")
def check(run_dir: str, baseline_file: str, write_baseline: bool, how: str | None, changed_only: bool) -> None:
    """Compare RUN_DIR's means with a baseline; exit 1 on a regression or a baseline entry the run lacks."""
    import bench.check as check_api

    if write_baseline and not how:
        raise click.UsageError("--write-baseline needs --how COMMAND: the exact command that made RUN_DIR")
    if how is not None and not write_baseline:
        raise click.UsageError("--how goes with --write-baseline only")
    try:
        _repair([Path(run_dir)])
        if write_baseline:
            path = check_api.write_baseline(run_dir, baseline_file, how)
            click.echo(f"baseline written to {path}  (check with: bench check RUN_DIR --baseline {path})")
            return
        result = check_api.check(run_dir, baseline_file)
    except (ValueError, OSError) as err:
        _fail(err)
    click.echo(check_api.format_table(result, changed_only=changed_only), nl=False)
    if not result.passed:
        sys.exit(1)


@zoo.command("pnorm-stats")
@click.option("--generator", required=True, help="Generator checkpoint (.pt rosinality, .safetensors).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .safetensors file.")
@click.option("--samples", type=click.IntRange(min=1000), default=1_000_000, help="Mapped samples (no truncation).")
@click.option("--device", default="auto", help="auto, cpu, cuda.")
def zoo_pnorm_stats(generator: str, out: str, samples: int, device: str) -> None:
    """Compute a generator's P-norm+ statistics (mean and float64 PCA of lrelu5(w))."""
    from bench.generators.checkpoints import load_generator
    from bench.runner import resolve_device
    from bench.world.train_methods import save_pnorm_stats
    from methods.pnorm import compute_pnorm_stats

    try:
        gen = load_generator(generator).to(resolve_device(device))
        stats = compute_pnorm_stats(gen, samples)
        save_pnorm_stats(stats, Path(out))
    except (ValueError, OSError) as err:
        _fail(err)
    lo, hi = float(stats.eigvals.min()), float(stats.eigvals.max())
    click.echo(f"wrote {out}: {samples} samples, eigenvalues {lo:.3g}..{hi:.3g}  (use: bench run --pnorm-stats {out})")


@main.command("train-encoder")
@click.argument("method", type=click.Choice(["fwplus4", "fwplus8", "fwplus16", "idinvert", "psp"]))
@click.option("--generator", required=True, help="Generator checkpoint (.pt rosinality or pSp/e4e, .safetensors).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Encoder file to write (.safetensors).")
@click.option("--data", default=None, help="Real images for the recipes that need them (idinvert, psp): "
              "folder:PATH, celebahq:PATH, lsun:PATH, set:PATH, or synthetic:N (generator samples).")
@click.option("--n", type=click.IntRange(min=1), default=1000, help="Images read from --data.")
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="Training iterations.  [default: the published recipe's: 10000 F/W+, 109375 IDinvert, 500000 pSp]")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Batch size.  [default: the recipe's: 16 F/W+, 128 IDinvert, 8 pSp]")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop this call after M minutes (the same command resumes).  [default: no limit]")
@click.option("--width", type=click.IntRange(min=1), default=None,
              help="Encoder width (scales the architecture).  [default: published: 128 F/W+, 64 IDinvert and pSp]")
@click.option("--head-width", type=click.IntRange(min=1), default=None,
              help="F/W+: width of the encoder's last two convolutions.  [default: the base code's channels, "
              "as BDInvert's encoder_simple]")
@click.option("--work", default=None, help="Checkpoint folder (resumed if present).  [default: OUT.work]")
@click.option("--perceptual", type=click.Choice(["auto", "lpips-vgg", "lpips-alex", "none"]), default="auto",
              help="Perceptual loss (LPIPS needs its backbone weights; auto falls back to none).")
@click.option("--lpips-weights", default=None, help="Folder or file with torchvision AlexNet/VGG16 weights.")
@click.option("--device", default="auto", help="auto, cpu, cuda, cuda:N.")
@click.option("--seed", type=int, default=0, help="Seed of the data draws.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_encoder(quiet: bool, **options) -> None:
    """Train the encoder METHOD needs for a generator, with the published recipe (resumable)."""
    from bench.encoders.train import TrainEncoderOptions
    from bench.encoders.train import train_encoder as train_api

    try:
        summary = train_api(TrainEncoderOptions(**options), log=lambda m: click.echo(m, err=True), progress=not quiet)
    except (ValueError, OSError) as err:
        _fail(err)
    click.echo(f"wrote {summary['out']}: {summary['steps']} steps of {summary['recipe']}, "
               f"{summary['iterations_per_s']} iterations/s  (use: bench run --generator {options['generator']} "
               f"--encoder {options['method']}={summary['out']})")


@zoo.command("sefa")
@click.option("--generator", required=True, help="Generator checkpoint (.pt rosinality or pSp/e4e, .safetensors).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for sefa_{i}.pt and sefa.json.")
@click.option("--k", type=click.IntRange(min=1), default=5, help="Number of directions (top eigenvalues).")
@click.option("--layers", default="all", help="ws rows to factorise: all, N-M or a comma list.")
def zoo_sefa(generator: str, out: str, k: int, layers: str) -> None:
    """Closed-form SeFa edit directions from the generator's style weights (one file per direction)."""
    from bench.encoders.provenance import generator_hash
    from bench.encoders.psp_release import load_generator_file
    from bench.encoders.sefa import parse_rows, save_directions, sefa

    try:
        gen = load_generator_file(generator)
        result = sefa(gen, parse_rows(layers, gen.num_ws), k)
        paths = save_directions(result, gen.num_ws, Path(out), {"generator": gen.description,
                                                                "generator_sha256": generator_hash(gen)})
    except (ValueError, OSError) as err:
        _fail(err)
    vals = ", ".join(f"{v:.3g}" for v in result.eigenvalues.tolist())
    click.echo(f"wrote {len(paths)} directions to {out} (rows {layers}; eigenvalues {vals})  "
               f"(use: bench run --generator {generator} --edit {paths[0]}:-3,3)")


@main.command("align")
@click.argument("src_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--size", type=click.IntRange(min=8), default=1024, show_default=True, help="Side of the aligned images.")
@click.option("--transform-size", type=click.IntRange(min=8), default=4096, show_default=True,
              help="Intermediate resampling size of the FFHQ recipe.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def align_cmd(src_dir: str, out_dir: str, size: int, transform_size: int, quiet: bool) -> None:
    """FFHQ-align the face photos in SRC_DIR into OUT_DIR (needs the faces extra).

    Eye and mouth landmarks (dlib, 68 points) give the FFHQ crop square; each image's crop is recorded in
    OUT_DIR/alignment.csv, and the images without a detected face are named and counted.
    """
    from bench.align import align_folder, describe

    try:
        summary = align_folder(src_dir, out_dir, size=size, transform_size=transform_size, progress=not quiet,
                               log=lambda m: click.echo(m, err=True))
    except (ValueError, OSError, RuntimeError) as err:
        _fail(err)
    click.echo(describe(summary))


def config_fields() -> list[str]:
    """Names of the RunConfig fields (each maps 1:1 to an option of ``bench run``)."""
    return [f.name for f in fields(RunConfig)]


if __name__ == "__main__":  # pragma: no cover
    main()
