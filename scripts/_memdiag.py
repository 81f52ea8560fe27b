"""Which module's fp32 pass allocates a huge cuDNN workspace at 1024 px?"""
import sys, torch
sys.path.insert(0, ".")
from bench.accel import Accel
from bench.speed import build_timing_setup
from methods.base import full_precision
dev = torch.device("cuda")
gen, perc, _ = build_timing_setup("config-f-1024", dev)
def run(label, cl, strict, batch=2):
    Accel("fp32", channels_last=cl).prepare(gen, perc)
    torch.cuda.synchronize(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    marks = []
    mods = [(n, m) for n, m in gen.named_modules() if n and n.count(".") <= 1 and n not in ("convs", "to_rgbs", "noises", "style")]
    mods += [("vgg." + n, m) for n, m in perc.net.named_children()]
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: marks.append((n, torch.cuda.max_memory_allocated() - base)))
             for n, m in mods]
    ws = gen.w_avg[None, None].repeat(batch, gen.num_ws, 1)
    saved = torch.backends.cudnn.allow_tf32
    ctx = full_precision(dev) if strict else torch.no_grad()
    with torch.no_grad(), ctx:
        img = gen.synthesis(ws)
        d = perc(img, img)
    torch.cuda.synchronize()
    for h in hooks: h.remove()
    prev = 0; jumps = []
    for n, v in marks:
        if v - prev > 2**30: jumps.append(f"{n}:+{(v-prev)/2**30:.1f}G")
        prev = max(prev, v)
    free = torch.cuda.mem_get_info()[0] / 2**30
    print(f"{label}: peak {torch.cuda.max_memory_allocated()/2**30 - base/2**30:.2f} GiB, free after {free:.1f} GiB; jumps {jumps}", flush=True)
for cl in (True, False):
    for strict in (True, False):
        run(f"channels_last={cl} strict_fp32={strict}", cl, strict)
run("channels_last=True strict batch 8", True, True, 8)
