"""Bytes one compiled optimisation step moves, as Inductor's scheduler counts them (issue #17, items 3a and 4).

``scripts/dispatch_count.py --bytes`` counts the eager step's memory traffic; this counts the compiled one.
It compiles a ``bench speed`` timing setup (world256, config-f-256, config-f-1024, ...) with real Inductor on
the CPU, as ``--compile`` runs (the generator's blocks and the perceptual distance, batch dynamic, the layout
forced channels-last), under bf16 autocast, with the up-convolution in the form a CUDA graph gets
(``--upconv``, default polyphase, whatever ``BENCH_UPCONV`` says). After each graph's code generation it asks
Inductor's scheduler how many bytes each kernel reads and writes (``get_read_write_buffers_sizes``: each
buffer once per kernel, the best case a kernel could reach; convolutions and matrix products, which Inductor
calls as external kernels, count their inputs and outputs once). The per-image share is the difference
between batches 4 and 2, so the weights drop out as they do at the protocol's batches. Adam's update of the
latent codes runs outside the graphs and is not counted (for the world's W+ codes, 14 x 512 floats per image
read and written a few times: about 0.2 MiB per image-step).

The fusion decisions come from Inductor's scheduler, which the CPU and CUDA backends share; the backends differ
in details (CUDA may split a reduction the CPU keeps whole), so this is an estimate of the GPU's traffic, and a
lower bound for what the kernels move. Dividing the card's bandwidth by it bounds the rate any schedule of these
kernels can reach.

``--device cuda`` counts the kernels a CUDA graph gets, as Triton fuses them (on the GPU machine).

``BENCH_FUSED_STYLED=1 TRITON_INTERPRET=1`` counts the step with the fused styled and RGB layers
(``bench.generators.fused_styled``): each of their ops is an external kernel here (:func:`skip_fused_kernels`).

    python scripts/compiled_traffic.py world256 im2s
    python scripts/compiled_traffic.py config-f-1024 im2s --bandwidth 3.35e12 --measured 278.9
    python scripts/compiled_traffic.py world256 im2s --device cuda --bandwidth 4.8e12
    BENCH_FUSED_STYLED=1 TRITON_INTERPRET=1 python scripts/compiled_traffic.py world256 im2s
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections import defaultdict
from collections.abc import Iterator

import torch

from bench.accel import Accel
from bench.generators import fused_styled, layers
from bench.speed import _resources, build_timing_setup, config_params, timing_method

MIB = 2 ** 20


def kernel_kind(node) -> tuple[str, str]:
    """(kind, name) of a scheduler node.

    An external kernel (convolution, matrix product) and what it calls, or an Inductor kernel and the aten
    operations fused into it.
    """
    from torch._inductor.scheduler import ExternKernelSchedulerNode
    from torch._inductor.utils import get_fused_kernel_name

    if isinstance(node, ExternKernelSchedulerNode):
        name = getattr(node.node, "python_kernel_name", None) or type(node.node).__name__
        return "extern", re.sub(r"^(extern_kernels|torch\.ops\.aten)\.", "", str(name))
    try:
        return "inductor kernel", get_fused_kernel_name(node.get_nodes(), "original_aten") or "fused"
    except Exception:  # naming is best effort; the count does not depend on it
        return "inductor kernel", "fused"


@contextlib.contextmanager
def counting_kernels(detail: str | None = None) -> Iterator[list[tuple[tuple[str, str], int]]]:
    """Count the bytes of every kernel Inductor generates inside the block.

    Each kernel appends ``((kind, name), bytes)`` to the list yielded: the bytes its scheduler node reads and
    writes (``get_read_write_buffers_sizes``). Inductor's caches are off inside, since a cache hit would skip
    code generation and with it the count. ``detail``: a pattern; each kernel whose name matches it prints
    the buffers of at least 1/8 MiB it reads and writes (names as Inductor's, for the whole batch).
    """
    from torch._inductor import config as inductor
    from torch._inductor.graph import GraphLowering

    records: list[tuple[tuple[str, str], int]] = []
    codegen = GraphLowering.codegen

    def counting_codegen(self, *a, **k):
        out = codegen(self, *a, **k)
        for node in self.scheduler.nodes:
            kind = kernel_kind(node)
            records.append((kind, node.get_read_write_buffers_sizes()))
            if detail and re.search(detail, kind[1]):
                sizes = {way: {name: f"{n / MIB:.2f}" for name, n in node.get_read_write_buffer_accesses(
                    include_reads=way == "reads", include_writes=way == "writes").items() if n >= MIB // 8}
                    for way in ("reads", "writes")}
                print(f"{kind[1][:100]}: MiB read {sizes['reads']}, written {sizes['writes']}", flush=True)
        return out

    with inductor.patch(fx_graph_cache=False, force_disable_caches=True):
        GraphLowering.codegen = counting_codegen
        try:
            yield records
        finally:
            GraphLowering.codegen = codegen


def count_step(config: str, method: str, batch: int, device: str = "cpu") -> str:
    """Compile and run a 2-step inversion of ``batch`` images, as ``--compile`` would on CUDA, under bf16."""
    dev = torch.device(device)
    gen, perceptual, desc = build_timing_setup(config, dev)
    Accel("fp32", channels_last=True, compile=True).prepare(gen, perceptual)
    params = config_params(config, [method])[0].get(method)
    resources = _resources(method, gen, params)
    z = torch.randn(batch, gen.z_dim, generator=torch.Generator().manual_seed(0)).to(dev)
    enabled, fused_styled.ENABLED = fused_styled.ENABLED, False  # targets rendered by the default path
    with torch.no_grad():
        targets = gen(z).clamp(-1, 1)
    fused_styled.ENABLED = enabled
    with torch.autocast(dev.type, dtype=torch.bfloat16), skip_fused_kernels():
        timing_method(method, gen, 2, params, resources).invert(targets, gen, seeds=list(range(batch)),
                                                                perceptual=perceptual)
    return desc


class _NoLaunch:
    """A Triton kernel launcher that launches nothing: ``_NoLaunch()[grid](*args)``."""

    def __getitem__(self, grid: object):  # noqa: ANN204
        return lambda *args, **kwargs: None


@contextlib.contextmanager
def skip_fused_kernels() -> Iterator[None]:
    """Run the fused layers' ops (``BENCH_FUSED_STYLED=1``, opaque under ``TRITON_INTERPRET=1``) without their kernels.

    Compiled on the CPU, each op is one external kernel whose inputs and outputs the count takes once: what the
    Triton kernels read and write, their intermediates (the convolution's output, dL/dconv) included, as outputs of
    one op and inputs of the next. Only code generation is counted, so the values do not matter; the interpreter
    would take about 20 minutes to compute them for the 64 px world. Off unless the fused path is on under the
    interpreter.
    """
    if not (fused_styled.ENABLED and fused_styled.INTERPRET):
        yield
        return
    launch = fused_styled.wrap_triton
    fused_styled.wrap_triton = lambda kernel: _NoLaunch()
    try:
        yield
    finally:
        fused_styled.wrap_triton = launch


def main() -> None:
    """Count a configuration's compiled step at two batches and print the per-image traffic."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("method")
    ap.add_argument("--batches", default="2,4")
    ap.add_argument("--bandwidth", type=float, default=3.35e12, help="bytes/s (H100 SXM datasheet: 3.35e12)")
    ap.add_argument("--measured", type=float, default=None, help="a measured image-steps/s to compare")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--upconv", default=layers.COMPILED_UPCONV, choices=layers.UPCONV_MODES[1:],
                    help="the 2x up-convolution's form (default: the one a compiled CUDA graph gets)")
    ap.add_argument("--device", default="cpu", help="cuda counts the kernels a CUDA graph gets (Triton's "
                    "fusions, which can differ from the CPU's: mixed-order reductions, split reductions)")
    ap.add_argument("--detail", default=None, help="print the buffers of the kernels whose name matches this, "
                    "at the last batch (e.g. leaky_relu)")
    args = ap.parse_args()
    layers.UPCONV = args.upconv  # on the CPU, auto would give the two-step form
    fused = fused_styled.ENABLED and fused_styled.INTERPRET and args.device == "cpu"

    runs = {}
    batches = [int(b) for b in args.batches.split(",")]
    for batch in batches:
        torch._dynamo.reset()
        with counting_kernels(args.detail if batch == batches[-1] else None) as records:
            desc = count_step(args.config, args.method, batch, args.device)
        runs[batch] = records
        print(f"batch {batch}: {sum(n for _, n in records) / MIB:,.1f} MiB per step in {len(records)} kernels",
              flush=True)
    lo, hi = sorted(runs)
    by_kind: dict[str, float] = defaultdict(float)
    by_name: dict[tuple[str, str], float] = defaultdict(float)  # the batches' difference, summed per name
    kernels: dict[tuple[str, str], int] = defaultdict(int)
    for batch, sign in ((lo, -1), (hi, 1)):
        for key, n in runs[batch]:
            by_kind[key[0]] += sign * n / (hi - lo)
            by_name[key] += sign * n / (hi - lo)
            kernels[key] += batch == hi
    whole = sum(by_kind.values())
    print(f"# {desc}; {args.method}; bf16 autocast, channels-last, compiled (Inductor, {args.device}); "
          f"up-convolution {args.upconv}, compiled RGB path {layers.COMPILED_RGB}"
          + ("; fused styled and RGB layers (BENCH_FUSED_STYLED=1, their kernels counted as external ops)" * fused))
    print(f"per image-step: {whole / MIB:,.1f} MiB; at {args.bandwidth / 1e12:.2f} TB/s at most "
          f"{args.bandwidth / whole:,.0f} image-steps/s")
    if args.measured:
        print(f"measured {args.measured:,.1f} image-steps/s: {args.measured * whole / 1e12:.2f} TB/s, "
              f"{args.measured * whole / args.bandwidth:.0%} of the bandwidth")
    for kind, n in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"{n / MIB:10.1f} MiB {n / whole:6.1%}  {kind}s")
    print(f"the {args.top} heaviest (kind, fused aten operations): MiB per image-step, share, kernels")
    for (kind, name), n in sorted(by_name.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"{n / MIB:10.1f} MiB {n / whole:6.1%} {kernels[kind, name]:4d}  {kind}: {name[:110]}")


if __name__ == "__main__":
    main()
