"""``torch.compile`` for the networks of an optimisation step (the generator and the perceptual distance).

A network that can run compiled mixes in :class:`Compilable`: ``compiled`` switches it (``bench.accel``
sets it from ``--compile``; the runner per method), :meth:`Compilable.run_compiled` runs one of its
functions through a graph compiled on first use, and a compilation that fails (no Triton, no C compiler)
makes it run eager from then on with a warning (:meth:`Compilable.stop_compiling`; the reason is kept in
``compile_failure`` and recorded with the method's settings). Only steps with gradients run compiled: the
one-off renders and the final float32 measurement run eager, as they would anyway.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import torch

# keyword arguments of torch.compile (the CPU tests use the aot_eager backend); BENCH_COMPILE_MODE=
# max-autotune-no-cudagraphs (or another torch.compile mode) is for speed experiments
COMPILE_OPTIONS: dict = {"mode": os.environ["BENCH_COMPILE_MODE"]} if os.environ.get("BENCH_COMPILE_MODE") else {}
# one compiled graph per (batch size, base resolution, grad mode, precision): more than dynamo's default 8
RECOMPILE_LIMIT = 64
# Inductor settings for every graph (forward and backward, which compiles at the first backward pass: so they
# are set process-wide, not patched around the call). Inductor lays a graph's convolutions out channels-last
# only when its heuristic agrees, and the heuristic says no as soon as a shape is dynamic, which the batch
# dimension is. Its own buffers then default to NCHW while the activations and weights are channels-last, and
# cuDNN converted each backward convolution's tensors to NHWC and back: 16-19 % of the compiled step's GPU
# time (benchmarks/RESULTS.md, session 15). Forcing the optimisation keeps every convolution channels-last.
INDUCTOR_CONFIG = {"force_layout_optimization": True}
# BENCH_SAVE_ACTIVATIONS=1: the activations are kept for backward, not recomputed (keep_activations; an
# experiment, not the default: the CPU count of the 256 px world's step grew from 165.9 to 177.6 MiB per image)
SAVE_ACTIVATIONS = os.environ.get("BENCH_SAVE_ACTIVATIONS", "0") == "1"


def mark_activations_saved(graph: Any) -> int:
    """Mark each leaky ReLU's output in a joint forward-backward graph to be saved for backward, not recomputed.

    AOTAutograd's partitioner recomputes cheap pointwise work in the backward pass to keep fewer tensors. For a
    styled convolution it keeps the convolution's output and recomputes the activation from it (noise, bias,
    demodulation, leaky ReLU). Inductor then fuses the recomputation into the backward's pointwise kernel but
    not into the reduction beside it (the style and scale gradients' sums over the pixels, in another loop
    order), so the pre-activation is written out in float32 for the reduction to read: in a stack of styled
    convolutions, 17 % more bytes per step than keeping the bf16 activation (scripts/styled_stack_traffic.py).
    In the whole generator the forward pass then splits some of its kernels, and the count grows instead
    (benchmarks/RESULTS.md, session 19). Returns how many nodes were marked (the final node of each leaky ReLU).
    """
    from torch.utils.checkpoint import CheckpointPolicy

    marked = 0
    for node in graph.nodes:
        if node.op != "call_function" or str(node.meta.get("original_aten")) != "aten.leaky_relu.default":
            continue
        if all(str(u.meta.get("original_aten")) != "aten.leaky_relu.default" for u in node.users):
            node.meta["recompute"] = CheckpointPolicy.MUST_SAVE
            marked += 1
    return marked


def keep_activations() -> Any:
    """Inductor's ``custom_partitioner_fn``: the default partitioner after :func:`mark_activations_saved`.

    None where this torch has no custom partitioner hook (the default partitioner then runs). The class is made
    on first use (it subclasses an Inductor class, not imported before) and kept in this module under its own
    name, so that Inductor's cache key can pickle it.
    """
    global KeepActivations
    if "KeepActivations" not in globals():
        try:
            from torch._functorch.partitioners import min_cut_rematerialization_partition
            from torch._inductor.custom_graph_pass import CustomPartitionerFn, get_hash_for_files
        except ImportError:
            return None

        def call(self: Any, gm: Any, joint_inputs: Any, **kwargs: Any) -> Any:
            mark_activations_saved(gm.graph)
            return min_cut_rematerialization_partition(gm, joint_inputs, **kwargs)

        KeepActivations = type("KeepActivations", (CustomPartitionerFn,), {
            "__module__": __name__, "__call__": call, "uuid": lambda self: get_hash_for_files((__file__,))})
    return KeepActivations()


class Compilable:
    """Mixin: a network whose optimisation-step functions can run through ``torch.compile``."""

    compiled: bool = False
    compile_failure: str | None = None
    compile_label = "the network"  # in the fallback warning: "torch.compile failed, <label> runs eager"

    def run_compiled(self, key: str, fn: Callable[..., Any], *args: Any, fixed: tuple = ()) -> Any:
        """``fn(*fixed, *args)``, through its compiled graph when ``compiled`` and gradients are on.

        The graph is made on first use and kept (out of any state dict) under ``key``. Dimension 0 of the
        tensor arguments (and of tensors in list arguments) is the batch: marked dynamic when above 1, so
        one graph serves the probe's batches, the run's and a halved one. ``fixed``: arguments with no batch
        dimension (constant matrices, say), left static.
        """
        if not (self.compiled and torch.is_grad_enabled()):
            return fn(*fixed, *args)
        graphs = self.__dict__.setdefault("_compiled_graphs", {})
        if key not in graphs:
            from torch._dynamo import config as dynamo

            for name in ("recompile_limit", "cache_size_limit"):  # the name differs between torch versions
                if hasattr(dynamo, name):
                    setattr(dynamo, name, max(getattr(dynamo, name), RECOMPILE_LIMIT))
            from torch._inductor import config as inductor

            for name, value in INDUCTOR_CONFIG.items():
                if hasattr(inductor, name):
                    setattr(inductor, name, value)
            if SAVE_ACTIVATIONS and getattr(inductor, "custom_partitioner_fn", False) is None:
                inductor.custom_partitioner_fn = keep_activations()
            graphs[key] = torch.compile(fn, **COMPILE_OPTIONS)
        tensors = [t for a in args for t in (a if isinstance(a, (list, tuple)) else [a])
                   if isinstance(t, torch.Tensor)]
        if tensors and tensors[0].shape[0] > 1:
            for t in tensors:
                torch._dynamo.maybe_mark_dynamic(t, 0)
        try:
            return graphs[key](*fixed, *args)
        except torch._dynamo.exc.BackendCompilerFailed as err:  # no Triton, no C compiler: run eager
            self.stop_compiling(err)
            return fn(*fixed, *args)

    def stop_compiling(self, err: Exception) -> None:
        """Run eager from now on, after a compilation failed with ``err`` (says so, keeps why in compile_failure)."""
        self.compiled = False
        cause = getattr(err, "inner_exception", None) or err.__cause__ or err
        self.compile_failure = f"{type(cause).__name__}: {str(cause).strip()[:300]}"
        warnings.warn(f"torch.compile failed, {self.compile_label} runs eager: {self.compile_failure}",
                      stacklevel=3)


def compilable(*networks: object) -> list[Compilable]:
    """The networks among ``networks`` that can run compiled (None and plain modules left out)."""
    return [n for n in networks if isinstance(n, Compilable)]


def set_compiled(flag: bool, *networks: object) -> None:
    """Switch compilation on or off for every compilable network of ``networks``."""
    for net in compilable(*networks):
        net.compiled = flag


def compile_failure(*networks: object) -> str | None:
    """Why a compilation of one of ``networks`` failed, or None."""
    return next((n.compile_failure for n in compilable(*networks) if n.compile_failure), None)


def stop_compiling(err: Exception, *networks: object) -> None:
    """Run every compilable network of ``networks`` eager after ``err``.

    For a compilation that failed in a backward pass, where it is not known whose graph it was.
    """
    for net in compilable(*networks):
        if net.compiled:
            net.stop_compiling(err)
