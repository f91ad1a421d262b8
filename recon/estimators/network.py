"""A trained network behind the `Estimator` interface.

from recon.estimators import NetworkEstimator
est = NetworkEstimator.from_checkpoint("runs/gru-20261123-120000")   # or a .ckpt
opd_nm = est.estimate(frames)     # (L, H, W) -> (1, H, W); (B, L, H, W) -> (B, H, W)
est.wavelengths_m, est.npix       # what the frames must be
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from data.clear import divide_by_clear
from data.schema import pupil_mask
from recon.estimators.base import as_clear, as_frames, check_normalised, remove_piston
from recon.models import NormStats, ReconModel, load_checkpoint
from recon.models.fast import inference_runner
from sim.pupil import circular_pupil

__all__ = ["NetworkEstimator", "wavelength_label"]


def wavelength_label(name: str, wavelengths_m: Sequence[float]) -> str:
    """``name@w1,w2um``: a report label that says which wavelengths an estimator reads."""
    return f"{name}@{','.join(f'{w * 1e6:g}' for w in wavelengths_m)}um"


class NetworkEstimator:
    """A trained network behind the `Estimator` interface.

    Args:
        model: a `ReconModel` (intensities -> OPD nm, normalisation inside), or a bare
            registered network: with ``meta["normalization"]`` it is wrapped in a
            `ReconModel`; without, it is used as it is (raw frames in, nm out).
        meta: ``wavelengths_m`` (list [m]), ``npix``; optional ``normalization``
            (`NormStats.to_dict()`), ``pupil`` ((H, W) transmission), ``arch``.
        name: label for reports (default: arch and wavelengths, e.g. ``gru@0.96,1um``).
        device: torch device for inference.
        check_normalisation: refuse frames whose mean in the pupil is out of range.
        compile_model: `recon.models.fast.inference_runner` (CUDA graphs); None: on for
            CUDA, off on the CPU.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        meta: dict[str, Any],
        name: str | None = None,
        device: str | torch.device = "cpu",
        check_normalisation: bool = True,
        compile_model: bool | None = None,
    ) -> None:
        for key in ("wavelengths_m", "npix"):
            if key not in meta:
                raise ValueError(f"network metadata lacks {key!r}")
        if not isinstance(model, ReconModel) and meta.get("normalization") is not None:
            model = ReconModel(model, NormStats.from_dict(meta["normalization"]))
        self.model = model.to(device).eval()
        self.meta = meta
        self.device = torch.device(device)
        self.wavelengths_m = [float(w) for w in meta["wavelengths_m"]]
        self.npix = int(meta["npix"])
        self.name = name or wavelength_label(str(meta.get("arch", "network")), self.wavelengths_m)
        pupil = meta.get("pupil")
        if pupil is None:
            self.mask = pupil_mask(circular_pupil(self.npix, 1.0))  # the nominal pupil
        else:
            p = pupil.cpu().numpy() if torch.is_tensor(pupil) else np.asarray(pupil)
            self.mask = pupil_mask(p)
        self.check_normalisation = check_normalisation
        self._run = inference_runner(self.model, self.device, compile_model)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        name: str | None = None,
        compile_model: bool | None = None,
    ) -> NetworkEstimator:
        """Load a `recon train` checkpoint (file or run folder) with plain torch."""
        model, meta = load_checkpoint(path, map_location=device)
        return cls(model, meta, name=name, device=device, compile_model=compile_model)

    @property
    def needs_clear(self) -> bool:
        """The frames must come with their clear frames (`divides_by_clear`)."""
        return self.divides_by_clear

    @property
    def divides_by_clear(self) -> bool:
        """True for a network trained on frames divided by the clear frame, pixel by pixel
        (its training config's ``data.normalisation: clear``)."""
        train = self.meta.get("train_config") or {}
        return (train.get("data") or {}).get("normalisation", "mean") == "clear"

    @torch.no_grad()
    def estimate(
        self,
        intensities: np.ndarray | torch.Tensor,
        wavelengths_m: Sequence[float] | None = None,
        clear: np.ndarray | torch.Tensor | None = None,
    ) -> np.ndarray:
        """OPD (B, H, W) [nm] from frames (B, L, H, W) or (L, H, W); see `Estimator`.

        A network trained on frames divided by the clear frame needs `clear`."""
        x = as_frames(intensities, self.wavelengths_m, self.npix, wavelengths_m)
        if self.check_normalisation:
            check_normalised(x, self.mask)
        if self.divides_by_clear:
            if clear is None:
                raise ValueError(
                    f"{self.name} was trained on frames divided by the clear-pupil frame: "
                    "give the clear frames (clear=..., --clear)"
                )
            c = as_clear(clear, self.wavelengths_m, self.npix, len(x), wavelengths_m)
            x = divide_by_clear(x, c)
        y = self._run(torch.from_numpy(x).to(self.device))  # (B, L, H, W) -> (B, 1, H, W) nm
        return remove_piston(y[:, 0].float().cpu().numpy(), self.mask)  # -> (B, H, W)
