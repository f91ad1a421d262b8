"""RepConv: a multi-branch conv for training that fuses into one 3x3 conv for inference
(Ding et al., CVPR 2021, "RepVGG: Making VGG-style ConvNets Great Again")."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights

from recon.nn.layers import create_act
from recon.nn.registry import register_block

__all__ = ["RepConv", "reparameterize_model"]


class _ConvBN(nn.Sequential):
    """Conv2d without bias, then BatchNorm2d."""

    def __init__(self, in_ch: int, out_ch: int, k: int, stride: int, groups: int) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        )


@register_block("repconv")
class RepConv(nn.Module):
    """``act(BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x))`` in training form; the identity-BN
    branch exists only when in_ch == out_ch and stride == 1.

    `reparameterize()` folds each BatchNorm (running statistics) into its conv, pads the 1x1
    kernel to 3x3, writes the identity as a 3x3 kernel with a 1 at the centre, and sums
    the three into a single 3x3 conv with bias: the same function in eval mode, at the
    cost of one conv.

    Shapes: (B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride).

    Args:
        norm: must be "batch": the fusion is defined for BatchNorm only.
        groups: conv groups (in_ch and out_ch must be divisible by it).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        norm: str | None = "batch",
        act: str | None = "relu",
        groups: int = 1,
    ) -> None:
        super().__init__()
        if norm != "batch":
            raise ValueError(f"RepConv fuses BatchNorm only: norm must be 'batch', got {norm!r}")
        self.in_ch, self.out_ch, self.stride, self.groups = in_ch, out_ch, stride, groups
        self.conv3: _ConvBN | None = _ConvBN(in_ch, out_ch, 3, stride, groups)
        self.conv1: _ConvBN | None = _ConvBN(in_ch, out_ch, 1, stride, groups)
        has_id = in_ch == out_ch and stride == 1
        self.identity: nn.BatchNorm2d | None = nn.BatchNorm2d(out_ch) if has_id else None
        self.fused: nn.Conv2d | None = None
        self.act = create_act(act)

    @property
    def is_fused(self) -> bool:
        """True after `reparameterize()`."""
        return self.fused is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.act(self.fused(x))
        assert self.conv3 is not None and self.conv1 is not None
        y = self.conv3(x) + self.conv1(x)
        if self.identity is not None:
            y = y + self.identity(x)
        return self.act(y)

    def _branch_kernels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused (out_ch, in_ch/groups, 3, 3) kernel and (out_ch,) bias of all branches."""
        assert self.conv3 is not None and self.conv1 is not None
        kernel = torch.zeros_like(self.conv3[0].weight)
        bias = torch.zeros(self.out_ch, dtype=kernel.dtype, device=kernel.device)
        for branch in (self.conv3, self.conv1):
            conv, bn = branch[0], branch[1]
            w, b = fuse_conv_bn_weights(
                conv.weight, None, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
            )
            pad = (3 - w.shape[-1]) // 2
            kernel = kernel + F.pad(w, [pad, pad, pad, pad])  # (O, I/g, k, k) -> (O, I/g, 3, 3)
            bias = bias + b
        if self.identity is not None:
            bn = self.identity
            per_group = self.in_ch // self.groups
            eye = torch.zeros_like(kernel)
            idx = torch.arange(self.out_ch, device=kernel.device)
            eye[idx, idx % per_group, 1, 1] = 1.0  # output c copies input c (within its group)
            w, b = fuse_conv_bn_weights(
                eye, None, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
            )
            kernel, bias = kernel + w, bias + b
        return kernel, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the branches by one 3x3 conv with bias (inference form); idempotent."""
        if self.fused is not None:
            return
        kernel, bias = self._branch_kernels()
        fused = nn.Conv2d(
            self.in_ch, self.out_ch, 3, stride=self.stride, padding=1, groups=self.groups
        ).to(device=kernel.device, dtype=kernel.dtype)
        fused.weight.copy_(kernel)
        fused.bias.copy_(bias)
        self.fused = fused
        self.conv3 = self.conv1 = self.identity = None


def reparameterize_model(model: nn.Module) -> nn.Module:
    """Call ``reparameterize()`` on every sub-module that has one (in place); returns `model`.

    Use on a model in eval mode before export or timing: the fusion uses BatchNorm running
    statistics.
    """
    for module in list(model.modules()):  # includes `model` itself
        if callable(getattr(module, "reparameterize", None)):
            module.reparameterize()
    return model
