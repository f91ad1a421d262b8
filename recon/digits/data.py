"""scikit-learn's handwritten digits (1797 images of 8 x 8 px, 10 classes; bundled with
the package, no download) split into training and test tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from common.errors import KnownError

__all__ = ["Digits", "load_digits_split"]

N_CLASSES = 10
GREY_LEVELS = 16.0  # the images' pixel values are 0..16


@dataclass(frozen=True)
class Digits:
    """Images (N, 1, 8, 8) in [0, 1] and labels (N,) int64, for training and test."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor

    def without(self, label: int) -> Digits:
        """The same split with every image of class `label` removed."""
        keep_train, keep_test = self.y_train != label, self.y_test != label
        return Digits(
            self.x_train[keep_train], self.y_train[keep_train],
            self.x_test[keep_test], self.y_test[keep_test],
        )  # fmt: skip


def load_digits_split(test_fraction: float = 0.25, seed: int = 0) -> Digits:
    """The digits, split stratified by class (`sklearn.model_selection.train_test_split`).

    Raises a `KnownError` naming the ``digits`` extra when scikit-learn is missing.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise KnownError("the digits task needs scikit-learn: pip install 'zwfs[digits]'") from None
    data = load_digits()
    x = torch.as_tensor(data.images, dtype=torch.float32)[:, None] / GREY_LEVELS
    y = torch.as_tensor(data.target, dtype=torch.int64)
    idx_train, idx_test = train_test_split(
        torch.arange(len(y)).numpy(), test_size=test_fraction, random_state=seed,
        stratify=y.numpy(),
    )  # fmt: skip
    it, ie = torch.as_tensor(idx_train), torch.as_tensor(idx_test)
    return Digits(x[it], y[it], x[ie], y[ie])
