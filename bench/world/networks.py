"""Networks of the embedded world besides the generator: the StyleGAN2 discriminator and the attribute net.

The discriminator follows the StyleGAN2 residual design (equalised learning rate, [1,3,3,1] blur before
strided convolutions, minibatch standard deviation). The attribute net is a small VGG-like CNN trained
on the renderer's labels; its convolutional features also define the world's perceptual distance.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.generators.layers import LRELU_GAIN, EqualLinear, make_fir_kernel, upfirdn


class EqualConv2d(nn.Module):
    """Convolution with equalised learning rate; optional blur + stride-2 downsampling."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, *, down: bool = False, bias: bool = True,
                 activate: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1 / math.sqrt(in_ch * kernel * kernel)
        self.down, self.kernel, self.activate = down, kernel, activate
        if down:
            self.register_buffer("blur", make_fir_kernel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.scale
        if self.down:
            p = (4 - 2) + (self.kernel - 1)  # blur so that the strided conv output is H/2
            x = upfirdn(x, self.blur, pad=((p + 1) // 2, p // 2))
            out = F.conv2d(x, w, stride=2)
        else:
            out = F.conv2d(x, w, padding=self.kernel // 2)
        if self.bias is not None:
            out = out + self.bias[None, :, None, None]
        return F.leaky_relu(out, 0.2) * LRELU_GAIN if self.activate else out


class DiscriminatorBlock(nn.Module):
    """Two 3x3 convs (the second downsampling) with a 1x1 downsampling residual skip."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = EqualConv2d(in_ch, in_ch, 3)
        self.conv2 = EqualConv2d(in_ch, out_ch, 3, down=True)
        self.skip = EqualConv2d(in_ch, out_ch, 1, down=True, bias=False, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator for square images at ``resolution``.

    Args:
        resolution: input side (power of two).
        channels: channels per resolution (keys resolution..4).
        mbstd_group: minibatch standard deviation group size.
    """

    def __init__(self, resolution: int, channels: dict[int, int], mbstd_group: int = 4) -> None:
        super().__init__()
        self.from_rgb = EqualConv2d(3, channels[resolution], 1)
        blocks, r = [], resolution
        while r > 4:
            blocks.append(DiscriminatorBlock(channels[r], channels[r // 2]))
            r //= 2
        self.blocks = nn.Sequential(*blocks)
        self.mbstd_group = mbstd_group
        c = channels[4]
        self.final_conv = EqualConv2d(c + 1, c, 3)
        self.fc = EqualLinear(c * 16, c, activate=True)
        self.out = EqualLinear(c, 1)

    def _mbstd(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.mbstd_group, n)
        if n % g:
            g = 1
        y = x.reshape(g, -1, c, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (n/g,)
        y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.from_rgb(img))
        x = self.final_conv(self._mbstd(x))
        return self.out(self.fc(x.flatten(1))).squeeze(1)


class AttributeNet(nn.Module):
    """Small VGG-like CNN: 4 stages of two 3x3 conv + ReLU, 2x average pooling between stages.

    ``forward`` returns the head's logits; ``features`` returns the ReLU outputs that end each stage (the
    taps of the perceptual distance). Input: (N, 3, R, R) in [-1, 1].
    """

    def __init__(self, n_outputs: int, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        stages, c_in = [], 3
        for c in widths:
            stages.append(nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(),
                                        nn.Conv2d(c, c, 3, padding=1), nn.ReLU()))
            c_in = c
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(c_in, n_outputs)
        self.widths = widths

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at the end of each stage."""
        feats = []
        for i, stage in enumerate(self.stages):
            if i:
                x = F.avg_pool2d(x, 2)
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[-1].mean(dim=(2, 3)))
