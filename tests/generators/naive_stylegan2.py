"""A second, deliberately naive StyleGAN2 forward pass used as an independent reference in tests.

It reads a rosinality-layout state dict directly and computes each sample with its own explicitly
modulated and demodulated weight tensor (the paper's formulation, eq. 1-3), builds upsampling from a
transposed convolution of the FIR kernel, and loops over the batch. It shares no code with
``bench.generators`` and is written for clarity, not speed. Float64 is used throughout.
"""

import math

import torch
import torch.nn.functional as F


def _fir(gain):
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    k = torch.outer(k, k)
    return k / k.sum() * gain


def _filter(x, kernel, pad0, pad1):
    c = x.shape[1]
    x = F.pad(x, (pad0, pad1, pad0, pad1))
    return F.conv2d(x, kernel.flip(0, 1).expand(c, 1, 4, 4), groups=c)


def _upsample2(x):
    # zero-stuffing via a stride-2 transposed conv with a 1x1 identity kernel, then filter
    c = x.shape[1]
    eye = torch.ones(c, 1, 1, 1, dtype=x.dtype)
    up = F.conv_transpose2d(x, eye, stride=2, groups=c, output_padding=1)
    return _filter(up, _fir(4.0), 2, 1)


def _linear(sd, prefix, x, lr_mul=1.0, act=False):
    w = sd[prefix + ".weight"] * lr_mul / math.sqrt(sd[prefix + ".weight"].shape[1])
    y = x @ w.t() + sd[prefix + ".bias"] * lr_mul
    return F.leaky_relu(y, 0.2) * math.sqrt(2) if act else y


def _modconv(sd, prefix, x, w, demod=True, up=False):
    weight = sd[prefix + ".weight"][0]
    out_ch, in_ch, k, _ = weight.shape
    s = _linear(sd, prefix + ".modulation", w)
    outs = []
    for b in range(x.shape[0]):
        wb = weight / math.sqrt(in_ch * k * k) * s[b][None, :, None, None]
        if demod:
            wb = wb / torch.sqrt((wb**2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        xb = x[b : b + 1]
        if up:
            yb = F.conv_transpose2d(xb, wb.transpose(0, 1), stride=2)
            yb = _filter(yb, _fir(4.0), 1, 1)
        else:
            yb = F.conv2d(xb, wb, padding=k // 2)
        outs.append(yb)
    return torch.cat(outs)


def _styled(sd, prefix, x, w, noise, up=False):
    y = _modconv(sd, prefix + ".conv", x, w, up=up)
    y = y + sd[prefix + ".noise.weight"] * noise
    return F.leaky_relu(y + sd[prefix + ".activate.bias"][None, :, None, None], 0.2) * math.sqrt(2)


def _rgb(sd, prefix, x, w, skip):
    y = _modconv(sd, prefix + ".conv", x, w, demod=False) + sd[prefix + ".bias"]
    return y if skip is None else y + _upsample2(skip)


def mapping(sd, z, n_mlp, lr_mul=0.01):
    sd = {k: v.double() for k, v in sd.items()}
    x = z.double()
    x = x / torch.sqrt((x**2).mean(dim=1, keepdim=True) + 1e-8)
    for i in range(1, n_mlp + 1):
        x = _linear(sd, f"style.{i}", x, lr_mul, act=True)
    return x


def synthesis(sd, ws, n_blocks, zero_skip_at=None, return_skips=False):
    """ws: (N, num_ws, w_dim). zero_skip_at: block index j whose incoming RGB skip is dropped."""
    sd = {k: v.double() for k, v in sd.items()}
    ws = ws.double()
    n = ws.shape[0]
    x = sd["input.input"].expand(n, -1, -1, -1)
    x = _styled(sd, "conv1", x, ws[:, 0], sd["noises.noise_0"])
    skip = _rgb(sd, "to_rgb1", x, ws[:, 1], None)
    skips = [skip]
    for j in range(n_blocks):
        x = _styled(sd, f"convs.{2*j}", x, ws[:, 2 * j + 1], sd[f"noises.noise_{2*j+1}"], up=True)
        x = _styled(sd, f"convs.{2*j+1}", x, ws[:, 2 * j + 2], sd[f"noises.noise_{2*j+2}"])
        skip = _rgb(sd, f"to_rgbs.{j}", x, ws[:, 2 * j + 3], None if j == zero_skip_at else skip)
        skips.append(skip)
    return (skip, skips) if return_skips else skip
