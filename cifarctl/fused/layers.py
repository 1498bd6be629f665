"""K models' layers as one: the building blocks of horizontal fusion (issue 8).

    conv = fuse_layer(nn.Conv2d(16, 32, 3), members=8)   # nn.Conv2d(128, 256, 3, groups=8)

HFTA (Wang et al., MLSys 2021, "Horizontally Fused Training Array", Sec. 3): the K members'
activations sit side by side in the channel dimension, member k's in channels
[k C, (k + 1) C), and every layer maps that layout to itself without mixing members. A
convolution becomes a grouped one (groups = K); BatchNorm over K C channels is K BatchNorms
(statistics are per channel); per-channel layers need no change (flattening (N, K C, h, w)
puts member k's features in block k, in `nn.Flatten`'s order); a linear layer becomes a
batched matmul over the K blocks. Every fused tensor (parameter or buffer) is member-major
along its first dimension, so `tensor.reshape(K, *member_shape)[k]` is member k's:
`cifarctl.fused.models` relies on it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cifarctl.errors import UsageError
from cifarctl.models.heads import NormedLinear
from cifarctl.models.resnet import ZeroPadShortcut

# Layers that already keep members apart: they act per channel or per position.
PER_CHANNEL = (nn.ReLU, nn.Sigmoid, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
               nn.Flatten, nn.Identity)


class FusedLinear(nn.Module):
    """K `nn.Linear(in_features, out_features)` side by side: (N, K in) -> (N, K out);
    weight (K, out, in) and bias (K, out) stack the members'. `normed`: K `NormedLinear`s,
    each member's features and class vectors normalised over its own `in` block."""

    def __init__(self, members: int, in_features: int, out_features: int, bias: bool = True,
                 normed: bool = False):
        super().__init__()
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.normed = normed
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members, out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = x.reshape(n, self.members, self.in_features).transpose(0, 1)  # (K, N, in)
        w = self.weight                                                     # (K, out, in)
        if self.normed:
            x, w = F.normalize(x, dim=2), F.normalize(w, dim=2)
        w = w.transpose(1, 2)                                               # (K, in, out)
        out = (torch.baddbmm(self.bias.unsqueeze(1), x, w) if self.bias is not None
               else torch.bmm(x, w))                                        # (K, N, out)
        return out.transpose(0, 1).reshape(n, self.members * self.out_features)


class FusedZeroPadShortcut(nn.Module):
    """`ZeroPadShortcut` of K members: subsample, then zero-pad each member's channels."""

    def __init__(self, members: int, shortcut: ZeroPadShortcut):
        super().__init__()
        self.members, self.stride, self.pad = members, shortcut.stride, shortcut.pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, K C, H, W) -> (N, K C', H/s, W/s)
        n, kc, h, w = x.shape
        x = x.reshape(n, self.members, kc // self.members, h, w)[..., ::self.stride, ::self.stride]
        x = F.pad(x, self.pad)                      # pads dim -3, each member's channels
        return x.reshape(n, -1, x.shape[-2], x.shape[-1])


def fuse_layer(layer: nn.Module, members: int) -> nn.Module:
    """The fused counterpart of one leaf layer, freshly initialised (weights are loaded by
    the caller); a layer this module cannot fuse exactly raises UsageError."""
    k = members
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros":
            raise UsageError(f"cannot fuse {layer}: only zero padding is supported")
        return nn.Conv2d(k * layer.in_channels, k * layer.out_channels, layer.kernel_size,
                         stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                         groups=k * layer.groups, bias=layer.bias is not None)
    if isinstance(layer, nn.BatchNorm2d):
        return nn.BatchNorm2d(k * layer.num_features, eps=layer.eps, momentum=layer.momentum,
                              affine=layer.affine,
                              track_running_stats=layer.track_running_stats)
    if isinstance(layer, nn.Linear):
        return FusedLinear(k, layer.in_features, layer.out_features, layer.bias is not None)
    if isinstance(layer, NormedLinear):
        return FusedLinear(k, layer.in_features, layer.out_features, bias=False, normed=True)
    if isinstance(layer, ZeroPadShortcut):
        return FusedZeroPadShortcut(k, layer)
    if isinstance(layer, PER_CHANNEL):
        return layer
    if isinstance(layer, nn.modules.dropout._DropoutNd):
        raise UsageError("models with dropout cannot be fused: their masks come from the "
                         "global RNG, so fused members would not train as they would alone; "
                         "train them separately")
    raise UsageError(f"cannot fuse layer {type(layer).__name__}: fused training supports "
                     f"Conv2d, BatchNorm2d, Linear, NormedLinear, option-A shortcuts and "
                     f"per-channel layers")
