"""The one interface of every reconstructor: intensities -> OPD [nm].

    from recon.estimator import NetworkEstimator, zernike_coefficients
    est = NetworkEstimator.from_checkpoint("runs/gru-.../checkpoints/best.ckpt")
    opd_nm = est.estimate(frames)            # (L, H, W) -> (1, H, W); (B, L, H, W) -> (B, H, W)
    est.wavelengths_m, est.npix              # what the frames must be

Baselines (the classical reconstruction) register by name, so that
``recon eval --baseline analytic`` is a look-up: ``create_baseline("analytic", data_path)``.
Frames are clear-pupil normalised (divided by the mean clear-pupil intensity inside the
pupil at the same wavelength), channels in the estimator's wavelength order; pass
``wavelengths_m`` to `estimate` to pick and order channels by value.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

__all__ = [
    "NORMALISED_MEAN_RANGE",
    "WAVELENGTH_MATCH_M",
    "Estimator",
    "NetworkEstimator",
    "as_frames",
    "check_normalised",
    "checkpoint_path",
    "create_baseline",
    "list_baselines",
    "register_baseline",
    "select_wavelengths",
    "zernike_coefficients",
]

WAVELENGTH_MATCH_M = 1e-9
"""Two wavelengths are the same within this [m] (1e-3 um, as `data.torch_dataset`)."""

NORMALISED_MEAN_RANGE = (0.25, 2.0)
"""Allowed mean intensity inside the pupil of a clear-pupil-normalised ZWFS frame.

Measured on the simulated system (0.96-1.2 um, 0-500 nm RMS): 0.47 (no aberration,
the dot sends half the light outside the pupil) to 1.0 (large aberrations scatter the
light past the dot). A factor 2 of margin on each side for noise and other masks;
raw counts or frames normalised by something else fall far outside.
"""


@runtime_checkable
class Estimator(Protocol):
    """A reconstructor: clear-pupil-normalised frames -> OPD maps [nm].

    Attributes:
        name: label used in reports.
        wavelengths_m: wavelengths [m] of the channels `estimate` reads, in order.
        npix: frame height and width [px].
    """

    name: str
    wavelengths_m: list[float]
    npix: int

    def estimate(
        self, intensities: np.ndarray | torch.Tensor, wavelengths_m: Sequence[float] | None = None
    ) -> np.ndarray:
        """OPD (B, H, W) [nm], piston free, from frames (B, L, H, W) or (L, H, W)."""
        ...


# ------------------------------------------------------------------ frames and wavelengths


def select_wavelengths(
    frames: np.ndarray, frame_wavelengths_m: Sequence[float], wanted_m: Sequence[float]
) -> np.ndarray:
    """Channels of frames (B, L_in, H, W) picked and ordered by wavelength value.

    Raises `ValueError` naming the missing wavelength and those available.
    """
    have = np.asarray(frame_wavelengths_m, dtype=np.float64)
    if frames.shape[1] != have.size:
        raise ValueError(
            f"frames have {frames.shape[1]} channels but {have.size} wavelengths were given"
        )
    idx = []
    for w in wanted_m:
        hit = np.flatnonzero(np.abs(have - float(w)) <= WAVELENGTH_MATCH_M)
        if hit.size == 0:
            avail = ", ".join(f"{x * 1e6:.4g}" for x in have)
            raise ValueError(
                f"the estimator needs {float(w) * 1e6:.4g} um, the frames have {avail} um"
            )
        idx.append(int(hit[0]))
    return frames[:, idx]  # (B, L_in, H, W) -> (B, L, H, W)


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
        x = select_wavelengths(x, wavelengths_m, wavelengths_needed_m)
    elif x.shape[1] != len(wavelengths_needed_m):
        need = ", ".join(f"{w * 1e6:.4g}" for w in wavelengths_needed_m)
        raise ValueError(
            f"frames have {x.shape[1]} wavelength channels, the estimator needs "
            f"{len(wavelengths_needed_m)} ({need} um); pass wavelengths_m to select by value"
        )
    if not np.isfinite(x).all():
        raise ValueError("frames contain NaN or inf")
    return x


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


# ------------------------------------------------------------------ baselines registry

BaselineFactory = Callable[..., Estimator]
_BASELINES: dict[str, BaselineFactory] = {}


def register_baseline(name: str) -> Callable[[BaselineFactory], BaselineFactory]:
    """Decorator: register ``factory(data_path, **options) -> Estimator`` under `name`."""

    def deco(factory: BaselineFactory) -> BaselineFactory:
        key = name.lower()
        if key in _BASELINES and _BASELINES[key] is not factory:
            old = _BASELINES[key]
            if (old.__module__, old.__qualname__) != (factory.__module__, factory.__qualname__):
                raise ValueError(f"baseline {name!r} is already registered")
        _BASELINES[key] = factory
        return factory

    return deco


def list_baselines() -> list[str]:
    """Names of the registered baselines (imports `recon.baselines`, which registers them)."""
    import recon.baselines  # noqa: F401

    return sorted(_BASELINES)


def create_baseline(name: str, data_path: str | os.PathLike, **options: Any) -> Estimator:
    """Build baseline `name` for the system of dataset `data_path` (options: wavelength_um)."""
    known = list_baselines()
    if name.lower() not in known:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(known)}")
    return _BASELINES[name.lower()](data_path, **options)


# ------------------------------------------------------------------ networks


def checkpoint_path(run_dir_or_ckpt: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder's ``checkpoints/best.ckpt`` (else ``last.ckpt``)."""
    p = Path(run_dir_or_ckpt)
    if p.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (p / "checkpoints" / name).is_file():
                return p / "checkpoints" / name
        raise FileNotFoundError(f"run folder {p} has no checkpoints/best.ckpt or last.ckpt")
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint or run folder at {p}")
    return p


def _disk(npix: int) -> np.ndarray:
    c = (np.arange(npix) - (npix - 1) / 2) / (npix / 2)
    return np.hypot(*np.meshgrid(c, c, indexing="ij")) <= 1.0


class NetworkEstimator:
    """A trained network behind the `Estimator` interface.

    Args:
        model: a `recon.models.ReconModel` (intensities -> OPD nm, normalisation inside),
            or a bare registered network (normalised intensities -> OPD, or OPD / scale):
            with ``meta["normalization"]`` it is wrapped in a `ReconModel`; without, it is
            used as it is (raw frames in, nm out).
        meta: ``wavelengths_m`` (list [m]), ``npix``; optional ``normalization``
            (`NormStats.to_dict()`), ``pupil`` ((H, W) transmission), ``arch``.
        name: label for reports (default: ``meta["arch"]`` or "network").
        device: torch device for inference.
        check_normalisation: refuse frames whose mean in the pupil is out of range.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        meta: dict[str, Any],
        name: str | None = None,
        device: str | torch.device = "cpu",
        check_normalisation: bool = True,
    ) -> None:
        for key in ("wavelengths_m", "npix"):
            if key not in meta:
                raise ValueError(f"network metadata lacks {key!r}")
        if not hasattr(model, "intensity_mean") and meta.get("normalization") is not None:
            from recon.models import ReconModel
            from recon.normalization import NormStats

            model = ReconModel(model, NormStats.from_dict(meta["normalization"]))
        self.model = model.to(device).eval()
        self.meta = meta
        self.device = torch.device(device)
        self.wavelengths_m = [float(w) for w in meta["wavelengths_m"]]
        self.npix = int(meta["npix"])
        self.name = name or str(meta.get("arch", "network"))
        pupil = meta.get("pupil")
        if pupil is None:
            self.mask = _disk(self.npix)
        else:
            p = pupil.cpu().numpy() if torch.is_tensor(pupil) else np.asarray(pupil)
            self.mask = p >= 0.5  # sim.pupil.PUPIL_THRESHOLD
        self.check_normalisation = check_normalisation

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", name: str | None = None
    ) -> NetworkEstimator:
        """Load a `recon train` checkpoint (file or run folder) with plain torch."""
        from recon.checkpoint import load_checkpoint

        ckpt = checkpoint_path(path)
        model, meta = load_checkpoint(ckpt, map_location=device)
        if name is None:
            run = ckpt.parent.parent.name if ckpt.parent.name == "checkpoints" else ckpt.stem
            name = f"{meta.get('arch', 'network')}:{run}"
        return cls(model, meta, name=name, device=device)

    @torch.no_grad()
    def estimate(
        self, intensities: np.ndarray | torch.Tensor, wavelengths_m: Sequence[float] | None = None
    ) -> np.ndarray:
        """OPD (B, H, W) [nm] from frames (B, L, H, W) or (L, H, W); see `as_frames`."""
        x = as_frames(intensities, self.wavelengths_m, self.npix, wavelengths_m)
        if self.check_normalisation:
            check_normalised(x, self.mask)
        t = torch.from_numpy(x).to(self.device)
        y = self.model(t)  # (B, L, H, W) -> (B, 1, H, W) [nm]
        y = y[:, 0].float().cpu().numpy()  # (B, 1, H, W) -> (B, H, W)
        return y - y[:, self.mask].mean(axis=1)[:, None, None]  # piston removed


# ------------------------------------------------------------------ Zernike coefficients


def zernike_coefficients(
    opd: np.ndarray | torch.Tensor, basis: np.ndarray | torch.Tensor, mask: np.ndarray
) -> np.ndarray:
    """Least-squares Zernike coefficients [nm RMS per mode] of OPD maps over the pupil.

    Args:
        opd: (B, H, W) or (H, W) [nm]. Piston (the mean inside the pupil) is removed first.
        basis: (M, H, W) unit-RMS modes, e.g. `ZWFSModel.basis()` (Noll j = 2..36).
        mask: (H, W) bool pupil.

    Returns:
        (B, M) or (M,) float64 coefficients c with opd ~ sum_j c_j Z_j inside the pupil.
    """
    o = opd.detach().cpu().numpy() if torch.is_tensor(opd) else np.asarray(opd)
    z = basis.detach().cpu().numpy() if torch.is_tensor(basis) else np.asarray(basis)
    m = np.asarray(mask, dtype=bool)
    single = o.ndim == 2
    o = o[None] if single else o
    if o.shape[-2:] != z.shape[-2:] or m.shape != z.shape[-2:]:
        raise ValueError(
            f"OPD {o.shape[-2:]}, basis {z.shape[-2:]} and mask {m.shape} differ in size"
        )
    values = o[:, m].astype(np.float64)  # (B, H, W) -> (B, P)
    values -= values.mean(axis=1, keepdims=True)
    design = z[:, m].astype(np.float64).T  # (M, H, W) -> (P, M)
    coeffs, *_ = np.linalg.lstsq(design, values.T, rcond=None)  # (M, B)
    return coeffs.T[0] if single else coeffs.T
