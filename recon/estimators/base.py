"""The one interface of every reconstructor: intensities -> OPD [nm].

Contract of `Estimator.estimate` (analytic, network, and any future one):
- frames (B, L, H, W) or (L, H, W), clear-pupil normalised (divided by the mean
  clear-pupil intensity inside the pupil at the same wavelength), as NumPy or torch;
- channels in the estimator's `wavelengths_m` order, or any order when the frames'
  own wavelengths are passed as ``wavelengths_m`` (channels are then picked by value);
- returns NumPy float32 (B, H, W) OPD [nm], piston (the mean inside the pupil) removed;
- ``clear``, optional: the clear-pupil frames the intensities were normalised with,
  (B, L, H, W), (L, H, W) or (1, H, W) (one for every wavelength), in the same channel
  order. An estimator that models the pupil's illumination uses them (the networks that
  divide by them, the analytic inverse, the refinement's forward model); others ignore
  them.

Baselines (classical reconstructions) register by name where they are defined, so that
``recon eval --baseline analytic`` is a look-up: ``create_baseline("analytic", data_path)``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from data.wavelengths import wavelength_indices
from recon.nn.registry import Registry

__all__ = [
    "BASELINES",
    "NORMALISED_MEAN_RANGE",
    "Estimator",
    "as_clear",
    "as_frames",
    "check_normalised",
    "create_baseline",
    "list_baselines",
    "needs_clear",
    "register_baseline",
    "remove_piston",
    "run_estimate",
]

NORMALISED_MEAN_RANGE = (0.25, 2.0)
"""Allowed mean intensity inside the pupil of a clear-pupil-normalised ZWFS frame.

Measured on the simulated system (0.96-1.2 um, 0-500 nm RMS): 0.47 (no aberration,
the dot sends half the light outside the pupil) to 1.0 (large aberrations scatter the
light past the dot). A factor 2 of margin on each side for noise and other masks;
raw counts or frames normalised by something else fall far outside.
"""


@runtime_checkable
class Estimator(Protocol):
    """A reconstructor: clear-pupil-normalised frames -> OPD maps [nm] (module docstring).

    Attributes:
        name: label used in reports.
        wavelengths_m: wavelengths [m] of the channels `estimate` reads, in order.
        npix: frame height and width [px].
        mask: (H, W) bool, the pupil pixels the piston is removed over.
    """

    name: str
    wavelengths_m: list[float]
    npix: int
    mask: np.ndarray

    def estimate(
        self,
        intensities: np.ndarray | torch.Tensor,
        wavelengths_m: Sequence[float] | None = None,
        clear: np.ndarray | torch.Tensor | None = None,
    ) -> np.ndarray:
        """OPD (B, H, W) [nm] float32, piston free, from frames (B, L, H, W) or (L, H, W)."""
        ...


def as_frames(
    intensities: np.ndarray | torch.Tensor,
    wavelengths_needed_m: Sequence[float],
    npix: int,
    wavelengths_m: Sequence[float] | None = None,
) -> np.ndarray:
    """Check and convert frames to float32 (B, L, H, W) in the estimator's channel order.

    Args:
        intensities: (B, L_in, H, W) or (L_in, H, W), clear-pupil normalised.
        wavelengths_needed_m: the estimator's wavelengths [m].
        npix: the estimator's frame size [px].
        wavelengths_m: the frames' wavelengths [m]; None: they are exactly the needed ones.
    """
    x = intensities.detach().cpu().numpy() if torch.is_tensor(intensities) else intensities
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]  # (L, H, W) -> (1, L, H, W)
    if x.ndim != 4:
        raise ValueError(f"frames must be (L, H, W) or (B, L, H, W), got shape {x.shape}")
    if x.shape[-2:] != (npix, npix):
        raise ValueError(
            f"frames are {x.shape[-2]} x {x.shape[-1]} px, the estimator needs {npix} x {npix} px"
        )
    if wavelengths_m is not None:
        if x.shape[1] != len(wavelengths_m):
            raise ValueError(
                f"frames have {x.shape[1]} channels but {len(wavelengths_m)} wavelengths were given"
            )
        x = x[:, wavelength_indices(wavelengths_m, wavelengths_needed_m)]
    elif x.shape[1] != len(wavelengths_needed_m):
        need = ", ".join(f"{w * 1e6:.4g}" for w in wavelengths_needed_m)
        raise ValueError(
            f"frames have {x.shape[1]} wavelength channels, the estimator needs "
            f"{len(wavelengths_needed_m)} ({need} um); pass wavelengths_m to select by value"
        )
    if not np.isfinite(x).all():
        raise ValueError("frames contain NaN or inf")
    return x


def as_clear(
    clear: np.ndarray | torch.Tensor,
    wavelengths_needed_m: Sequence[float],
    npix: int,
    batch: int,
    wavelengths_m: Sequence[float] | None = None,
) -> np.ndarray:
    """Clear-pupil frames as float32 (B, L, H, W) in the estimator's channel order.

    Args:
        clear: (B, L_in, H, W), (L_in, H, W), or (1, H, W) / (H, W) for every wavelength.
        batch: B of the intensities.
        wavelengths_m: the frames' wavelengths (as in `as_frames`).
    """
    c = clear.detach().cpu().numpy() if torch.is_tensor(clear) else np.asarray(clear)
    c = np.asarray(c, dtype=np.float32)
    if c.ndim == 2:
        c = c[None]
    if c.ndim == 3:
        c = c[None]  # (L_in, H, W) -> (1, L_in, H, W)
    if c.ndim != 4 or c.shape[-2:] != (npix, npix) or c.shape[0] not in (1, batch):
        raise ValueError(
            f"clear frames must be (B, L, H, W), (L, H, W) or (H, W) of {npix} px for "
            f"{batch} frames, got shape {c.shape}"
        )
    if c.shape[1] != 1:
        c = as_frames(c, wavelengths_needed_m, npix, wavelengths_m)
    return np.broadcast_to(c, (batch, len(wavelengths_needed_m), npix, npix))


def needs_clear(estimator: Estimator) -> bool:
    """True for an estimator that cannot work without the clear frames (a network
    trained on frames divided by them, or a fit started from one)."""
    return bool(getattr(estimator, "needs_clear", False))


def run_estimate(
    estimator: Estimator,
    intensities: np.ndarray | torch.Tensor,
    wavelengths_m: Sequence[float] | None = None,
    clear: np.ndarray | torch.Tensor | None = None,
) -> np.ndarray:
    """`estimator.estimate`, with the clear frames when there are any and it takes them
    (an estimator written before the ``clear`` argument still works)."""
    takes_clear = "clear" in inspect.signature(estimator.estimate).parameters
    if clear is None or not takes_clear:
        return estimator.estimate(intensities, wavelengths_m=wavelengths_m)
    return estimator.estimate(intensities, wavelengths_m=wavelengths_m, clear=clear)


def check_normalised(frames: np.ndarray, mask: np.ndarray) -> None:
    """Raise `ValueError` unless every frame's mean inside the pupil is in the normalised range."""
    means = frames[..., mask].mean(axis=-1)  # (B, L, H, W) -> (B, L)
    lo, hi = NORMALISED_MEAN_RANGE
    bad = (means < lo) | (means > hi)
    if bad.any():
        b, c = np.argwhere(bad)[0]
        raise ValueError(
            f"frame {b} channel {c} has mean intensity {means[b, c]:.4g} inside the pupil, "
            f"outside [{lo}, {hi}] of clear-pupil-normalised ZWFS frames: divide the "
            "dark-subtracted frame by the mean clear-pupil intensity inside the pupil"
        )


def remove_piston(opd_nm: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(B, H, W) maps minus their mean inside the pupil `mask` (H, W), as float32."""
    opd = np.asarray(opd_nm, dtype=np.float32)
    return opd - opd[:, mask].mean(axis=1)[:, None, None]


BaselineFactory = Callable[..., Estimator]
BASELINES: Registry[BaselineFactory] = Registry("baseline")
"""Classical reconstructors: ``factory(data_path, **options) -> Estimator``."""


def register_baseline(name: str) -> Callable[[BaselineFactory], BaselineFactory]:
    """Decorator: register ``factory(data_path, **options) -> Estimator`` under `name`."""
    return BASELINES.register(name)


def list_baselines() -> list[str]:
    """Names of the registered baselines (``import recon.estimators`` registers them)."""
    return BASELINES.names()


def create_baseline(name: str, data_path: str | os.PathLike, **options: Any) -> Estimator:
    """Build baseline `name` for the system of dataset `data_path` (options: wavelength_um)."""
    return BASELINES.create(name, data_path, **options)
