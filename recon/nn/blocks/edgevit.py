"""EdgeViT local-global-local (LGL) block (Pan et al., ECCV 2022, "EdgeViTs: Competing
Light-weight CNNs on Mobile Devices with Vision Transformers")."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from recon.nn.layers import ConvNormAct, create_act, create_norm
from recon.nn.registry import register_block

__all__ = ["ConvFFN", "EdgeViTBlock", "GlobalSparseAttention"]


class ConvFFN(nn.Sequential):
    """Pointwise feed-forward network: norm, 1x1 (C -> rC), act, 1x1 (rC -> C)."""

    def __init__(
        self, channels: int, ratio: float = 4.0, norm: str | None = "batch", act: str = "gelu"
    ) -> None:
        hidden = max(1, round(channels * ratio))
        super().__init__(
            create_norm(norm, channels),
            nn.Conv2d(channels, hidden, 1),
            create_act(act),
            nn.Conv2d(hidden, channels, 1),
        )


class GlobalSparseAttention(nn.Module):
    """Self-attention among one delegate token per r x r window, then local propagation.

    The delegate is the window average (the paper samples one pixel; averaging sees the
    whole window). Every delegate attends to every other, so information crosses the whole
    map at a cost of (HW / r^2)^2 instead of (HW)^2. A depthwise transposed conv (kernel r,
    stride r) spreads each delegate back over its window.

    Shapes: (B, C, H, W) -> (B, C, h, w), h = ceil(H / r) -> N = h*w tokens ->
    (B, C, h, w) -> (B, C, h*r, w*r) -> cropped (B, C, H, W).
    """

    def __init__(
        self, channels: int, num_heads: int, window: int = 2, norm: str | None = "batch"
    ) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.num_heads, self.window = num_heads, window
        self.norm = create_norm("layer", channels)
        self.sample = nn.AvgPool2d(window, stride=window, ceil_mode=True)
        # No qkv bias: a key bias is invisible to softmax and would get no gradient.
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=False)
        self.propagate = nn.ConvTranspose2d(
            channels, channels, window, stride=window, groups=channels
        )
        self.prop_norm = create_norm(norm, channels)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        y = self.sample(self.norm(x))  # (B, C, H, W) -> (B, C, h, w)
        h, w = y.shape[-2:]
        qkv = self.qkv(y).reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (B, heads, N, C/heads)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, C/heads)
        y = y.transpose(-1, -2).reshape(b, c, h, w)  # -> (B, C, h, w)
        y = self.propagate(y)[..., :height, :width]  # (B, C, h, w) -> (B, C, H, W)
        return self.proj(self.prop_norm(y))


@register_block("edgevit")
class EdgeViTBlock(nn.Module):
    """EdgeViT LGL block: local aggregation, global sparse attention, local propagation.

    ``x = x + pos(x)`` (depthwise 3x3 conditional position encoding);
    ``x = x + local_agg(x)`` (norm, 1x1, depthwise 3x3, 1x1); ``x = x + ffn(x)``;
    ``x = x + global_sparse_attention(x)`` (see `GlobalSparseAttention`); ``x = x + ffn(x)``.
    A conv-norm projection (3x3, with the stride) leads when in_ch != out_ch or stride > 1.

    Shapes: (B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride); any H, W (the last
    window may be partial).

    Args:
        window: r, the side of the window that one delegate token stands for.
        num_heads: attention heads; default: largest divisor of out_ch <= out_ch / head_dim.
        head_dim: channels per head wanted when `num_heads` is None.
        mlp_ratio: hidden width of the FFNs as a multiple of out_ch.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        norm: str | None = "batch",
        act: str | None = "gelu",
        window: int = 2,
        num_heads: int | None = None,
        head_dim: int = 32,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        act = act or "gelu"
        if in_ch != out_ch or stride > 1:
            self.proj: nn.Module = ConvNormAct(in_ch, out_ch, 3, stride=stride, norm=norm, act=None)
        else:
            self.proj = nn.Identity()
        if num_heads is None:
            wanted = max(1, out_ch // head_dim)
            num_heads = max(h for h in range(1, wanted + 1) if out_ch % h == 0)
        c = out_ch
        self.pos = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.local_agg = nn.Sequential(
            create_norm(norm, c),
            nn.Conv2d(c, c, 1),
            nn.Conv2d(c, c, 3, padding=1, groups=c),
            nn.Conv2d(c, c, 1),
        )
        self.ffn1 = ConvFFN(c, mlp_ratio, norm, act)
        self.global_attn = GlobalSparseAttention(c, num_heads, window, norm)
        self.ffn2 = ConvFFN(c, mlp_ratio, norm, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, in_ch, H, W) -> (B, out_ch, H/s, W/s)
        x = x + self.pos(x)
        x = x + self.local_agg(x)
        x = x + self.ffn1(x)
        x = x + self.global_attn(x)
        return x + self.ffn2(x)
