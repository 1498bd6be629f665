"""He et al. 2016 CIFAR ResNets (resnet20/32/44/56/110), with option-A shortcuts.

    model = create_model("resnet32")         # 464,154 parameters

"Deep Residual Learning for Image Recognition", Sec. 4.2: a 3x3 conv with 16 filters, then
three stages of n basic blocks each (16, 32, 64 filters, feature maps 32, 16, 8; depth 6n + 2),
global average pooling and a linear classifier. Where the width doubles, the shortcut is
option A (Sec. 3.3): the identity subsampled by the stride, the new channels zero-padded, so
shortcuts add no parameters. Weights start Kaiming-normal (He et al. 2015), as in Cao et al.'s
LDAM-DRW reference code (kaidic/LDAM-DRW, `resnet_cifar`) that the SPEC 2 numbers come from.

Published CIFAR-10 errors (He et al. 2016, Table 6): 8.75 / 7.51 / 7.17 / 6.97 / 6.43 % for
depth 20 / 32 / 44 / 56 / 110.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cifarctl.models import register_model


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: `x[:, :, ::stride, ::stride]`, zero channels added on both sides."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        self.pad = (0, 0, 0, 0, extra // 2, extra - extra // 2)  # F.pad order: W, H, C

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C', H/s, W/s)
        return F.pad(x[:, :, :: self.stride, :: self.stride], self.pad)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU (He et al. 2016, Fig. 2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        same_shape = stride == 1 and in_channels == out_channels
        self.shortcut = (nn.Identity() if same_shape
                         else ZeroPadShortcut(in_channels, out_channels, stride))
        self.relu2 = nn.ReLU()  # its own module: the dead-unit probe hooks every ReLU site

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n + 2) for 32x32 inputs; `layer1.0.relu1` etc. name its ReLUs."""

    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = self._stage(16, 16, blocks, stride=1)   # (N, 16, 32, 32)
        self.layer2 = self._stage(16, 32, blocks, stride=2)   # (N, 32, 16, 16)
        self.layer3 = self._stage(32, 64, blocks, stride=2)   # (N, 64, 8, 8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()                           # (N, 64)
        self.classifier = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)  # std sqrt(2 / fan_in), He et al. 2015

    @staticmethod
    def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
        first = BasicBlock(in_channels, out_channels, stride)  # the only one to change shape
        rest = (BasicBlock(out_channels, out_channels, 1) for _ in range(blocks - 1))
        return nn.Sequential(first, *rest)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, 32, 32) -> (N, num_classes)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.classifier(self.flatten(self.pool(x)))


def _resnet(depth: int) -> Callable[..., CifarResNet]:
    def builder(num_classes: int = 10) -> CifarResNet:
        return CifarResNet(depth, num_classes)

    builder.__name__ = builder.__qualname__ = f"resnet{depth}"  # the registry's name for it
    return register_model(builder)


resnet20 = _resnet(20)    # n = 3: 269,722 parameters
resnet32 = _resnet(32)    # n = 5: 464,154 parameters; the long-tail study's model (SPEC 1.3, 2)
resnet44 = _resnet(44)    # n = 7: 658,586 parameters
resnet56 = _resnet(56)    # n = 9: 853,018 parameters
resnet110 = _resnet(110)  # n = 18: 1,727,962 parameters
