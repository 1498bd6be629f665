"""SGD over a fused model's stacked tensors, each member with its own hyper-parameters.

    shells = [(model_k, build_optimizer(model_k, lr=..., ...)) for model_k in member_models]
    optimizer = FusedSGD(fused, shells)          # takes each member's settings from its SGD
    optimizer.param_groups[0]["lr"] = lr         # (K,) tensor: member k's learning rate
    optimizer.step()
    state = optimizer.member_state_dict(2)       # member 2's torch.optim.SGD state_dict

Each member's settings are read from the SGD `build_optimizer` builds for its own model, as
an unfused run builds it, so no member can be configured differently: per member and per
parameter the lr, momentum, Nesterov flag and weight decay (0 in the no-decay group). The
update is `torch.optim.SGD`'s (torch/optim/sgd.py, `_single_tensor_sgd`), elementwise:

    d = g + wd p;  b = d at the first step, else mu b + d;  d = d + mu b if nesterov else b;
    p = p - lr d

(dampening and maximize must be off.) With mu = 0 torch keeps no buffer and steps with d,
which b = 0 b + d gives. Checkpoints hold each member's ordinary SGD state dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cifarctl.fused.models import FusedModel

_SETTINGS = ("lr", "momentum", "nesterov", "weight_decay")


def _settings_by_name(model: nn.Module, optimizer: torch.optim.SGD) -> dict[str, dict[str, Any]]:
    """{parameter name: its group's lr, momentum, nesterov, weight_decay}."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in optimizer.param_groups:
        if group.get("dampening", 0) or group.get("maximize", False):
            raise ValueError("fused SGD needs dampening 0 and maximize off, as cifarctl sets")
        for p in group["params"]:
            out[names[id(p)]] = {key: group[key] for key in _SETTINGS}
    return out


class FusedSGD(torch.optim.Optimizer):
    """One SGD step for K stacked members; `param_groups[0]["lr"]` is a (K,) tensor."""

    def __init__(self, model: FusedModel,
                 members: Sequence[tuple[nn.Module, torch.optim.SGD]]) -> None:
        k = model.members
        if len(members) != k:
            raise ValueError(f"a fused model of {k} members but {len(members)} optimizers")
        self.fused, self.members = model, list(members)
        self.settings = settings = [_settings_by_name(m, opt) for m, opt in self.members]
        named = dict(model.body.named_parameters())
        self.names = [n for n in named if n in settings[0]]
        params = [named[n] for n in self.names]
        device, dtype = params[0].device, params[0].dtype  # float32 (float64 in tests)

        def per_member(key: str, name: str, dtype=dtype) -> torch.Tensor:  # (K,)
            return torch.tensor([s[name][key] for s in settings], dtype=dtype, device=device)

        first = self.names[0]  # lr, momentum and nesterov are per member, not per group
        # float64, so checkpoints record the schedule's learning rates exactly
        super().__init__(params, {"lr": per_member("lr", first, torch.float64)})
        # row r of tensor j belongs to member rows[j][r]: stacked tensors are member-major
        self._row_counts = [p.shape[0] for p in params]
        self._rows = torch.cat([torch.arange(k, device=device).repeat_interleave(n // k)
                                for n in self._row_counts])
        self._param_of_row = torch.cat([torch.full((n,), j, device=device)
                                        for j, n in enumerate(self._row_counts)])
        self._momentum = self._expand(per_member("momentum", first))
        self._nesterov = self._expand(per_member("nesterov", first, torch.bool))
        self._any_nesterov = any(s[first]["nesterov"] for s in settings)
        # weight decay is per member and per parameter (no-decay groups): (params, K)
        self._decay = self._expand(torch.stack([per_member("weight_decay", n)
                                                for n in self.names]))

    def _expand(self, values: torch.Tensor) -> list[torch.Tensor]:
        """Per-member values, (K,) or per parameter (params, K), as one tensor per parameter
        that broadcasts against it along its member-major first dimension."""
        rows = (values[self._rows] if values.dim() == 1
                else values[self._param_of_row, self._rows])  # one gather for all parameters
        rows = rows.split(self._row_counts)
        return [r.reshape(-1, *([1] * (p.dim() - 1)))
                for r, p in zip(rows, self.param_groups[0]["params"])]

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        """One update of every member (torch.optim.SGD's, see the module docstring)."""
        group = self.param_groups[0]
        params = group["params"]
        if any(p.grad is None for p in params):
            raise RuntimeError("fused SGD: every member parameter needs a gradient")
        neg_lr = self._expand(-self.member_lrs().to(params[0].device, params[0].dtype))
        grads = torch._foreach_addcmul([p.grad for p in params], params, self._decay)  # d
        bufs = [self.state[p].get("momentum_buffer") for p in params]
        if any(b is None for b in bufs):  # first step: b = d, as torch clones d
            bufs = [d.clone() for d in grads]
            for p, b in zip(params, bufs):
                self.state[p]["momentum_buffer"] = b
        else:
            torch._foreach_mul_(bufs, self._momentum)
            torch._foreach_add_(bufs, grads)
        updates = bufs
        if self._any_nesterov:
            ahead = torch._foreach_addcmul(grads, bufs, self._momentum)  # d + mu b
            updates = [torch.where(n, a, b) for n, a, b in zip(self._nesterov, ahead, bufs)]
        torch._foreach_addcmul_(params, updates, neg_lr)  # p - lr d

    def member_lrs(self) -> torch.Tensor:
        """The (K,) learning rates of the last step."""
        lr = self.param_groups[0]["lr"]
        return torch.as_tensor(lr, dtype=torch.float64).reshape(-1).expand(self.fused.members)

    def member_state_dict(self, k: int) -> dict[str, Any]:
        """Member k's optimizer state as its own `torch.optim.SGD.state_dict()`."""
        model, opt = self.members[k]
        named = dict(model.named_parameters())
        for group in opt.param_groups:
            group["lr"] = float(self.member_lrs()[k])
        for name, p in zip(self.names, self.param_groups[0]["params"]):
            buf = self.state[p].get("momentum_buffer")
            if buf is not None and self.settings[k][name]["momentum"] != 0:
                # torch keeps no buffer for momentum 0
                opt.state[named[name]]["momentum_buffer"] = self.fused.member_tensor(name, buf, k)
        return opt.state_dict()

    def load_member_state_dicts(self, states: Sequence[dict[str, Any]]) -> None:
        """Take each member's momentum buffers from its ordinary SGD state dict."""
        for (_, opt), state in zip(self.members, states):
            opt.load_state_dict(state)
        if not any(opt.state for _, opt in self.members):
            return  # no member has stepped: the first fused step initialises the buffers
        for name, p in zip(self.names, self.param_groups[0]["params"]):
            stacked = []
            for model, opt in self.members:
                member_p = dict(model.named_parameters())[name]
                buf = opt.state[member_p].get("momentum_buffer")
                # no buffer (momentum 0): zeros, as mu b + d = d then
                stacked.append(torch.zeros_like(member_p) if buf is None else buf)
            self.state[p]["momentum_buffer"] = torch.empty_like(p).copy_(
                torch.stack(stacked).reshape(p.shape))
