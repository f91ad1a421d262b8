"""One-shot class addition without training (DONE, Kimura 2022).

DONE ("Direct ONE-shot learning with quantile weight imprinting", K. Kimura,
arXiv:2204.13361, 2022) adds a class to a trained classifier whose last layer is a
`nn.Linear` on a feature vector: the new class's weight vector is the feature vector
of its example (the mean over examples for k-shot), quantile-normalised to the
distribution of the existing weights, and its bias is the median of the existing
biases. Nothing is trained and the other classes are left unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["add_class", "quantile_normalise"]


def _interp_sorted(sorted_values: Tensor, q: Tensor) -> Tensor:
    """Quantiles q in [0, 1] of sorted values, linear interpolation (as `torch.quantile`).

    Written out because `torch.quantile` refuses inputs above 2^24 elements.
    """
    pos = q * (sorted_values.numel() - 1)
    lo = pos.floor().long()
    hi = pos.ceil().long()
    frac = pos - lo.to(pos.dtype)
    return sorted_values[lo] + frac * (sorted_values[hi] - sorted_values[lo])


def quantile_normalise(values: Tensor, reference: Tensor) -> Tensor:
    """Map each value to the reference value of the same quantile (rank).

    The value of rank r (0-based) among n is mapped to the reference quantile
    (r + 0.5) / n; tied values share the mean of their targets, so the result does not
    depend on how ties are ordered (ReLU features have many zeros).

    Args:
        values: (n,) the vector to normalise.
        reference: any shape; its pooled values define the target distribution.

    Returns:
        (n,) with the dtype of `reference`; same order statistics as `values`.
    """
    v = values.detach().flatten().to(reference.dtype)
    ref_sorted = reference.detach().flatten().sort().values
    n = v.numel()
    v_sorted, order = v.sort()
    q = (torch.arange(n, dtype=ref_sorted.dtype, device=v.device) + 0.5) / n
    targets = _interp_sorted(ref_sorted, q)  # target value for each rank
    # Average the targets over runs of tied values.
    _, group, counts = torch.unique_consecutive(v_sorted, return_inverse=True, return_counts=True)
    group_mean = torch.zeros(counts.numel(), dtype=targets.dtype, device=v.device)
    group_mean.index_add_(0, group, targets)
    group_mean = group_mean / counts.to(targets.dtype)
    out = torch.empty_like(targets)
    out[order] = group_mean[group]
    return out


@torch.no_grad()
def add_class(linear: nn.Linear, features: Tensor) -> nn.Linear:
    """Return a copy of `linear` with one more output: a class imprinted from examples (DONE).

    Args:
        linear: the trained last layer, weight (C, D), bias (C,) or None.
        features: (k, D) or (D,), the input features of `linear` (penultimate-layer
            output) for the k examples of the new class.

    Returns:
        A new `nn.Linear(D, C + 1)` on the same device and dtype: rows 0..C-1 are the
        old weights and biases; row C is the mean feature quantile-normalised to the
        pooled old weights, its bias the median of the old biases. `linear` is unchanged.
    """
    feats = features.reshape(1, -1) if features.ndim == 1 else features
    out_features, in_features = linear.weight.shape
    if feats.ndim != 2 or feats.shape[1] != in_features or feats.shape[0] < 1:
        raise ValueError(
            f"features must be (k, {in_features}) or ({in_features},) with k >= 1, "
            f"got {tuple(features.shape)}"
        )
    w_old = linear.weight.detach()
    mean_feature = feats.to(device=w_old.device, dtype=w_old.dtype).mean(0)  # (k, D) -> (D,)
    w_new = quantile_normalise(mean_feature, w_old)

    has_bias = linear.bias is not None
    new = nn.Linear(in_features, out_features + 1, bias=has_bias)
    new = new.to(device=w_old.device, dtype=w_old.dtype)
    new.weight.copy_(torch.cat([w_old, w_new[None]], dim=0))  # (C, D) -> (C + 1, D)
    if has_bias:
        b_old = linear.bias.detach()
        b_new = torch.quantile(b_old.float(), 0.5).to(b_old.dtype)  # median (mean of middle two)
        new.bias.copy_(torch.cat([b_old, b_new[None]]))
    return new
