"""The ZWFS engine linearised: intensities, tangents (J v), adjoints (J^T u) and noise weights.

Model-based refinement (`recon.estimators.refine`) and the Cramer-Rao bound
(`recon.evaluation.crb`) need the engine's derivatives with respect to the OPD. The
engine is E = e - T(e), e = A exp(i phi), phi_l = k_l OPD (k_l = 2 pi / lambda_l
[rad/nm]), T the real, linear Babinet dot operator with the 2 x 2 mix of
(1 - exp(i theta)), and I = |E|^2. Hence, for an OPD tangent v [nm]:

    de = (-Im e, Re e) k_l v,   dE = de - T(de),   dI = 2 (Re E dRe E + Im E dIm E),

and the adjoint runs the same steps backwards (T's adjoint is T with the mix
transposed: T = V^T (K * (V X V^T)) V is symmetric in X). Everything here runs in
float64 (the engine built at ``complex128``); frames are clear-pupil normalised.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from sim.config import SimConfig
from sim.zwfs import ZWFSModel

__all__ = ["FrameModel", "Linearisation", "NoiseModel"]


@dataclass
class Linearisation:
    """The engine's state at one OPD batch: input field e, output field E, intensity I.

    Shapes: e_in, e_out (B, L, 2, N, N) (real and imaginary parts, in units of the
    square root of the mean clear-pupil intensity); intensity (B, L, N, N).
    """

    e_in: torch.Tensor
    e_out: torch.Tensor
    intensity: torch.Tensor


@dataclass(frozen=True)
class NoiseModel:
    """Photon (Poisson) and read (Gaussian) noise of normalised frames.

    Attributes:
        counts_per_unit: photo-electrons per pixel for a normalised intensity of 1
            (photons in the clear pupil / pupil pixels); None: no photon noise.
        read_noise_e: read noise [e- RMS per pixel].
    """

    counts_per_unit: float | None
    read_noise_e: float = 0.0
    poisson: bool = True

    @classmethod
    def from_config(cls, cfg: SimConfig, pupil_pixels: int) -> NoiseModel:
        """The noise of `sim.detector.add_noise` for a config (photons spread over the pupil).

        Read noise without a photon level: `add_noise` scales the frames by 1e6 counts
        per unit and adds no Poisson noise; the weights are then uniform.
        """
        photons, read = cfg.detector.photons, float(cfg.detector.read_noise_e)
        if photons is None and read == 0:
            return cls(None, 0.0)
        if photons is None:
            return cls(1e6, read, poisson=False)
        return cls(float(photons) / pupil_pixels, read)

    @property
    def noisy(self) -> bool:
        """True when the frames carry a photon level (weights are not uniform)."""
        return self.counts_per_unit is not None

    def variance(self, intensity: torch.Tensor) -> torch.Tensor:
        """Per-pixel variance [normalised units^2] of frames whose mean is `intensity`.

        Gaussian approximation of Poisson + read noise: (I n + r^2) / n^2 with n the
        counts per unit; I is clipped at 1 count so that dark pixels keep a finite weight.
        Without a photon level the variance is 1 (plain least squares).
        """
        if self.counts_per_unit is None:
            return torch.ones_like(intensity)
        n = self.counts_per_unit
        shot = intensity.clamp(min=1.0 / n) * n if self.poisson else 0.0
        return (shot + max(self.read_noise_e, 1e-3) ** 2) / n**2


class FrameModel:
    """The float64 engine of a simulated system, with tangents and adjoints (module docstring).

    Args:
        cfg: the system (a dataset's ``config``); its detector binning must be 1.
        device: torch device.
        dtype: float64 (exact derivatives, tests, the Cramer-Rao bound) or float32 (the
            refinement's fields and Jacobians: intensities to ~1e-7, i.e. ~1e-5 nm).
    """

    def __init__(
        self,
        cfg: SimConfig,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        if cfg.detector.binning != 1:
            raise ValueError(
                f"refinement needs detector.binning = 1 (the frames on the OPD grid), got "
                f"{cfg.detector.binning}"
            )
        self.cfg = cfg
        with torch.no_grad():
            precision = "complex128" if dtype == torch.float64 else "complex64"
            self.engine = ZWFSModel(cfg.model_copy(update={"precision": precision}), device)
        e = self.engine
        self.device = e.pupil.device
        self.dtype = dtype
        self.amplitude = e.amplitude  # (N, N)
        self.k = e.wavenumber_per_nm  # (L, 1, 1) [rad/nm]
        self.mix = e.dot_mix  # (L, 2, 2)
        self.mix_t = e.dot_mix.transpose(-1, -2).contiguous()
        self.mask = e.mask.cpu().numpy()  # (N, N) bool, transmission >= 0.5
        self.lit = (e.pupil > 0).cpu().numpy()  # (N, N) bool, any transmission
        self.npix = cfg.pupil.npix
        self.n_wavelengths = len(cfg.wavelengths_um)
        self.pupil_pixels = int(e.detector_mask.sum())
        self._dots: dict[torch.dtype, torch.nn.Module] = {}

    def _dot(self, dtype: torch.dtype) -> torch.nn.Module:
        """The dot operator in `dtype` (a float32 copy is made once, on first use)."""
        if dtype == self.dtype:
            return self.engine.dot_operator
        if dtype not in self._dots:
            self._dots[dtype] = copy.deepcopy(self.engine.dot_operator).to(dtype)
        return self._dots[dtype]

    def noise(self) -> NoiseModel:
        """The config's detector noise (`NoiseModel.from_config`)."""
        return NoiseModel.from_config(self.cfg, self.pupil_pixels)

    def tensor(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """x as a float64 tensor on this model's device."""
        return torch.as_tensor(x, dtype=self.dtype, device=self.device)

    def linearise(self, opd_nm: torch.Tensor) -> Linearisation:
        """Fields and intensity (B, L, N, N) for OPD maps (B, N, N) [nm]."""
        phase = opd_nm[:, None] * self.k  # (B, N, N) -> (B, L, N, N)
        e_in = torch.stack((torch.cos(phase), torch.sin(phase)), dim=2) * self.amplitude
        e_out = e_in - self.engine.dot_operator(e_in, self.mix)
        intensity = e_out[:, :, 0].square() + e_out[:, :, 1].square()
        return Linearisation(e_in, e_out, intensity)

    def intensity(self, opd_nm: torch.Tensor) -> torch.Tensor:
        """Normalised intensities (B, L, N, N) for OPD maps (B, N, N) [nm] (float64)."""
        return self.linearise(opd_nm).intensity

    def jvp(
        self, lin: Linearisation, tangents_nm: torch.Tensor, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """dI for K tangents per sample: (B, K, N, N) [nm] -> (B, K, L, N, N) [per nm].

        dI = 2 k (v s - E . T(i e v)), s = E . (i e): one pass of the dot operator over
        B K L fields (in `dtype`, default float64; float32 halves time and memory).
        """
        dtype = dtype or self.dtype
        b, n_k = tangents_nm.shape[:2]
        e_in, e_out = lin.e_in.to(dtype), lin.e_out.to(dtype)
        k = self.k.to(dtype)
        # s = E . (i e) = Im(e) ... per wavelength: (B, L, N, N)
        local = (e_out[:, :, 1] * e_in[:, :, 0] - e_out[:, :, 0] * e_in[:, :, 1]) * k
        v = tangents_nm.to(dtype)[:, :, None]  # (B, K, 1, N, N)
        op = self._dot(dtype)
        n_l, n = e_in.shape[1], e_in.shape[-1]
        # i e v, both parts at once: (B, K, L, 2, N, N) -> first MFT stage over x
        de = torch.stack((-e_in[:, :, 1], e_in[:, :, 0]), dim=2)[:, None] * v[:, :, :, None]
        y = de.reshape(b * n_k, n_l, 2 * n, n) @ op.v_t[:, 0]  # (BK, L, 2N, 2M')
        m = op.v.shape[-2]
        focal = op.v @ y.reshape(b * n_k, n_l, 2, n, m)  # (BK, L, 2, 2M', 2M')
        focal = op.kernel * focal
        mix = self.mix.to(dtype)[None, :, :, :, None, None]  # (1, L, 2, 2, 1, 1)
        focal = (mix * focal[:, :, None]).sum(dim=3)  # (BK, L, 2, 2M', 2M')
        z = (focal.reshape(b * n_k, n_l, 2 * m, m) @ op.v[:, 0]).reshape(b * n_k, n_l, 2, m, n)
        t = op.v_t @ z  # T(i e v): (BK, L, 2, N, N)
        t = t.reshape(b, n_k, n_l, 2, n, n)
        cross = torch.addcmul(
            e_out[:, None, :, 0] * t[:, :, :, 0], e_out[:, None, :, 1], t[:, :, :, 1]
        )  # E . T(i e v): (B, K, L, N, N)
        return 2 * (local[:, None] * v - cross * k)

    def vjp(self, lin: Linearisation, cotangent: torch.Tensor) -> torch.Tensor:
        """J^T u: intensity cotangents (B, L, N, N) -> OPD gradient (B, N, N) [per nm]."""
        g_out = 2 * lin.e_out * cotangent[:, :, None]  # (B, L, 2, N, N)
        g_in = g_out - self.engine.dot_operator(g_out, self.mix_t)
        g_phi = -lin.e_in[:, :, 1] * g_in[:, :, 0] + lin.e_in[:, :, 0] * g_in[:, :, 1]
        return (g_phi * self.k).sum(dim=1)  # (B, L, N, N) -> (B, N, N)

    def modal_jacobian(
        self, lin: Linearisation, basis: torch.Tensor, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """dI/dc for unit-RMS modes `basis` (J, N, N): (B, J, L, N, N) [per nm RMS].

        Forward mode over the J columns (`jvp`), in `dtype` (default float64).
        """
        b = lin.intensity.shape[0]
        return self.jvp(lin, basis.expand(b, -1, -1, -1), dtype)
