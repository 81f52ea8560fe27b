"""Peak GPU memory of one float32 forward pass at 1024 px, strict float32 against TF32 (device run).

``python scripts/cudnn_workspace.py`` on the GPU machine renders 2 (then 8) images with the config-f-1024
timing generator plus the random-weight LPIPS-VGG16 distance and prints the peak memory and the modules
whose pass raised it by more than 1 GiB. In strict float32 cuDNN picks FFT convolutions with workspaces of
tens of GB; with TF32 allowed it does not (``methods.base.full_precision``, benchmarks/RESULTS.md).
"""

import torch

from bench.accel import Accel
from bench.speed import build_timing_setup

GIB = 2**30


def peak(gen, perceptual, channels_last: bool, strict: bool, batch: int = 2) -> str:
    """One no-grad render + perceptual pass; the peak memory and the modules that raised it by > 1 GiB."""
    Accel("fp32", channels_last=channels_last).prepare(gen, perceptual)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    marks: list[tuple[str, int]] = []
    skip = ("convs", "to_rgbs", "noises", "style")
    modules = [(n, m) for n, m in gen.named_modules() if n and n.count(".") <= 1 and n not in skip]
    modules += [("vgg." + n, m) for n, m in perceptual.net.named_children()]
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: marks.append((n, torch.cuda.max_memory_allocated() - base)))
             for n, m in modules]
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = not strict
    try:
        with torch.no_grad():
            images = gen.synthesis(gen.w_avg[None, None].repeat(batch, gen.num_ws, 1))
            perceptual(images, images)
        torch.cuda.synchronize()
    finally:
        torch.backends.cudnn.allow_tf32 = saved
        for h in hooks:
            h.remove()
    jumps, prev = [], 0
    for name, value in marks:
        if value - prev > GIB:
            jumps.append(f"{name} +{(value - prev) / GIB:.1f} GiB")
        prev = max(prev, value)
    free = torch.cuda.mem_get_info()[0] / GIB
    return (f"channels_last={channels_last} strict_fp32={strict} batch {batch}: peak "
            f"{(torch.cuda.max_memory_allocated() - base) / GIB:.2f} GiB, free after {free:.1f} GiB; jumps {jumps}")


def main() -> None:
    """Print the four layout x precision cases at batch 2 and strict channels-last at batch 8."""
    gen, perceptual, _ = build_timing_setup("config-f-1024", torch.device("cuda"))
    for channels_last in (True, False):
        for strict in (True, False):
            print(peak(gen, perceptual, channels_last, strict), flush=True)
    print(peak(gen, perceptual, True, True, batch=8), flush=True)


if __name__ == "__main__":
    main()
