"""A second task for the block library: handwritten digits (scikit-learn's bundled 8x8
set, the optional ``digits`` extra), classified by `recon.nn` models.

- `data`: the stratified train/test split as tensors.
- `fit`: training (cross-entropy, optionally distilled from a teacher) and accuracy.
- `study`: the three experiments of `recon digits`: blocks, one-shot class addition
  (DONE), distillation.
"""

from recon.digits.data import Digits, load_digits_split
from recon.digits.fit import Distillation, FitConfig, accuracy, fit_classifier

__all__ = [
    "Digits",
    "Distillation",
    "FitConfig",
    "accuracy",
    "fit_classifier",
    "load_digits_split",
]
