"""K ordinary models as one fused model, and back (issue 8).

    members = [create_model("resnet20") for _ in range(4)]   # each after its own manual_seed
    fused = FusedModel(members)
    logits = fused(x)                     # x (N, 4 * 3, 32, 32) -> (N, C, 4)
    state = fused.member_state_dict(2)    # member 2 as an ordinary resnet20 state dict

The fused model is a deep copy of member 0's module tree with every leaf layer swapped for
its fused counterpart (`fuse_layer`), loaded with the members' tensors stacked: its initial
weights are theirs by construction. The containers' `forward`s run unchanged on the stacked
layout and the members' parameter names are kept, so a member's state dict is its slice of
each tensor under the same key: fused members' checkpoints are ordinary ones.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from cifarctl.errors import UsageError
from cifarctl.fused.layers import fuse_layer
from cifarctl.models.probe import fired_units


def _fuse_tree(module: nn.Module, members: int) -> nn.Module:
    """Swap every leaf of `module` (a private copy) for its fused counterpart, in place."""
    if next(module.parameters(recurse=False), None) is not None:
        raise UsageError(f"cannot fuse {type(module).__name__}: it holds parameters besides "
                         f"its layers'")
    for name, child in module.named_children():
        if next(child.children(), None) is None:
            setattr(module, name, fuse_layer(child, members))
        else:
            _fuse_tree(child, members)
    return module


class FusedModel(nn.Module):
    """K models of one architecture trained as one: input (N, K 3, H, W), member k's images
    in channels 3k..3k+2; output logits (N, C, K), the layout `F.cross_entropy` and
    `cifarctl.engine.train_steps` take for K members."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("a fused model needs at least one member")
        self.members = len(members)
        like = next(members[0].parameters())  # the new layers take the members' dtype, device
        self.body = _fuse_tree(copy.deepcopy(members[0]), self.members).to(like.device,
                                                                           like.dtype)
        states = [m.state_dict() for m in members]
        self.member_shapes = {k: v.shape for k, v in states[0].items()}
        stacked = {}  # the members' tensors, stacked as the fused model's
        for key, target in self.body.state_dict().items():
            tensors = [s[key] for s in states]
            # BatchNorm's num_batches_tracked: one counter for all members
            stacked[key] = (max(tensors, key=int) if target.dim() == 0
                            else torch.stack(tensors).reshape(target.shape))
        self.body.load_state_dict(stacked)
        self.num_classes = members[0].classifier.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)                                           # (N, K C)
        return out.reshape(out.shape[0], self.members, self.num_classes).transpose(1, 2)

    def member_tensor(self, key: str, tensor: torch.Tensor, k: int) -> torch.Tensor:
        """Member k's part of the fused `tensor` stored under `key` (a state-dict key)."""
        shape = self.member_shapes[key]
        if tensor.dim() == 0:
            return tensor.clone()
        return tensor.reshape(self.members, *shape)[k].clone()

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights and buffers as the unfused model's `state_dict()`."""
        return {key: self.member_tensor(key, t, k).detach()
                for key, t in self.body.state_dict().items()}

    def dead_relu_fractions(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per ReLU layer, each member's fraction of dead units: (K,) tensors, keyed and
        measured as `cifarctl.models.dead_relu_fractions` measures one model."""
        return {name: 1 - units.reshape(self.members, -1).float().mean(1)
                for name, units in fired_units(self.body, x).items()}
