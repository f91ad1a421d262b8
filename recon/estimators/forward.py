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

import functools
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import ndtr, xlogy
from scipy.stats import poisson

from sim.config import SimConfig
from sim.zwfs import ZWFSModel

__all__ = [
    "NOMINAL_SYSTEM",
    "SYSTEM_FIELDS",
    "FrameModel",
    "Linearisation",
    "NoiseModel",
    "shifted_pupil",
]

SYSTEM_FIELDS = ("diameter_scale", "depth_scale", "shift_x_px", "shift_y_px", "pupil_scale")
"""The system vector of a calibration, in order: dot diameter and depth as factors of the
config's, pupil shift [px] and pupil radius as a factor."""
NOMINAL_SYSTEM = (1.0, 1.0, 0.0, 0.0, 1.0)


def shifted_pupil(npix: int, system: torch.Tensor) -> torch.Tensor:
    """Transmission (N, N) of the pupil shifted by system[2:4] [px], radius x system[4].

    A disk with a 1-px linear edge (the grey-pixel area to first order), differentiable
    in the system (`recon.estimators.calibrate`).
    """
    c = torch.arange(npix, dtype=system.dtype, device=system.device) - (npix - 1) / 2
    yy, xx = torch.meshgrid(c, c, indexing="ij")  # [px]
    r = torch.hypot(xx - system[2], yy - system[3])
    return (system[4] * npix / 2 - r + 0.5).clamp(0.0, 1.0)


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

    def _shifted_counts(self, intensity: torch.Tensor) -> torch.Tensor:
        """n I + r^2 [counts]: the shifted-Poisson mean of Poisson + read noise (Snyder et
        al. 1993); r^2 is floored at 1 count, so that dark pixels keep a finite weight."""
        n = self.counts_per_unit
        assert n is not None
        return intensity * n + max(self.read_noise_e**2, 1.0)

    def weights(self, intensity: torch.Tensor) -> torch.Tensor:
        """1 / sigma [1 / normalised units] (same shape) at the model's `intensity`.

        The Fisher information of the likelihood below: n / sqrt(n I + r^2) with
        photons; n / r for read noise alone; 1 without noise (least squares).
        """
        if self.counts_per_unit is None:
            return torch.ones_like(intensity)
        n = self.counts_per_unit
        if not self.poisson:
            return torch.full_like(intensity, n / max(self.read_noise_e, 1e-3))
        return n * self._shifted_counts(intensity.clamp(min=0.0)).rsqrt()

    def clamped_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames at least -r^2 / n (measured shifted counts d >= 0, as in `deviance`):
        the Fisher-scoring residual `weights(I) (I - clamped_frames(y))` is then exactly
        the deviance's gradient, dark pixels with negative read noise included."""
        if self.counts_per_unit is None or not self.poisson:
            return frames
        return frames.clamp(min=-max(self.read_noise_e**2, 1.0) / self.counts_per_unit)

    def deviance(self, intensity: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Per-pixel deviance (same shape) of measured `frames` from model `intensity`.

        Twice the negative log-likelihood ratio to a perfect fit, so ~1 per pixel at the
        truth (the chi^2 of the weighted residual): with photons the shifted-Poisson
        2 [d ln(d / mu) - (d - mu)], d and mu the measured and model counts + r^2; with
        read noise alone or without noise the squared weighted residual. Its Gauss-Newton
        form is the weighted residual `weights(I) (I - frames)` (Fisher scoring), unlike a
        chi^2 weighted by the measured frames, which is biased at low counts.
        """
        if self.counts_per_unit is None or not self.poisson:
            return ((intensity - frames) * self.weights(intensity)).square()
        mu = self._shifted_counts(intensity.clamp(min=0.0))
        d = self._shifted_counts(frames).clamp(min=0.0)
        return 2 * (torch.xlogy(d, d) - torch.xlogy(d, mu) - (d - mu))  # no NaN grad at d=0

    def deviance_null(self, intensity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance per pixel (same shape) of `deviance` when `intensity` is the
        truth: 1 and 2 for Gaussian noise; with photons, from `_deviance_null_table`
        (Poisson counts plus Gaussian read noise, by quadrature), interpolated."""
        if self.counts_per_unit is None or not self.poisson:
            return torch.ones_like(intensity), torch.full_like(intensity, 2.0)
        grid_u, mean, var = _deviance_null_table(float(self.read_noise_e))
        u = torch.log1p(intensity.clamp(min=0.0) * self.counts_per_unit).to(torch.float64)
        u = torch.nan_to_num(u, nan=0.0)  # a NaN model (a NaN start) must not index out
        pos = (u / grid_u[1]).clamp(max=len(grid_u) - 1.000001)  # the grid is uniform in u
        i = pos.floor().long()
        frac = pos - i
        mean_t = torch.as_tensor(mean, device=u.device)
        var_t = torch.as_tensor(var, device=u.device)
        return (
            torch.lerp(mean_t[i], mean_t[i + 1], frac),
            torch.lerp(var_t[i], var_t[i + 1], frac),
        )


@functools.lru_cache(maxsize=8)
def _deviance_null_table(read_noise_e: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and variance of the shifted-Poisson deviance per pixel (`NoiseModel.deviance`)
    at true counts c = 0..1e4 (a grid uniform in log(1 + c)).

    For each Poisson count k the read noise g ~ N(0, r^2) is integrated exactly where the
    measured counts d = k + r^2 + g clamp at 0 (deviance 2 mu, with probability
    Phi(-(k + r^2) / r)) and by 64-node Gauss-Legendre above (a smooth integrand).
    Above 1e4 counts the deviance is chi^2 with one degree of freedom to ~1e-5 (mean 1,
    variance 2). Written here because no library gives these moments; ~0.2 s, once per
    read noise.
    """
    r = float(read_noise_e)
    shift = max(r**2, 1.0)  # as NoiseModel._shifted_counts
    leg_x, leg_w = np.polynomial.legendre.leggauss(64)
    grid_u = np.linspace(0.0, np.log1p(1e4), 257)
    mean, var = np.empty_like(grid_u), np.empty_like(grid_u)
    for j, c in enumerate(np.expm1(grid_u)):
        k = np.arange(
            max(0.0, np.floor(c - 12 * np.sqrt(c) - 12)), np.ceil(c + 12 * np.sqrt(c) + 24)
        )
        pk = poisson.pmf(k, c) if c > 0 else (k == 0).astype(float)
        mu = c + shift

        def dev(d: np.ndarray, mu: float = mu) -> np.ndarray:
            return 2 * (xlogy(d, d / mu) - (d - mu))

        if r == 0:
            m1 = dev(k + shift)
            m2 = m1**2
        else:
            g0 = -(k + shift) / r  # the read noise (in sigmas) below which d clamps at 0
            lo = np.maximum(g0, -12.0)[:, None]
            g = lo + (12.0 - lo) * (leg_x + 1) / 2  # (K, 64) nodes on [lo, 12] sigmas
            w = leg_w * (12.0 - lo) / 2 * np.exp(-0.5 * g**2) / np.sqrt(2 * np.pi)
            dv = dev(k[:, None] + shift + r * g)
            clamped = ndtr(g0)
            m1 = (w * dv).sum(1) + clamped * 2 * mu
            m2 = (w * dv**2).sum(1) + clamped * (2 * mu) ** 2
        mean[j] = (pk * m1).sum()
        var[j] = (pk * m2).sum() - mean[j] ** 2
    mean[-1], var[-1] = 1.0, 2.0
    return grid_u, mean, var


class FrameModel:
    """The float64 engine of a simulated system, with tangents and adjoints (module docstring).

    Args:
        cfg: the system (a dataset's ``config``); its detector binning must be 1.
        device: torch device.
        dtype: float64 (exact derivatives, tests, the Cramer-Rao bound) or float32 (the
            refinement's fields and Jacobians: intensities to ~1e-7, i.e. ~1e-5 nm).
        system: a calibrated system (`SYSTEM_FIELDS`, e.g. `calibrate`'s): the config's
            dot diameter and depth scaled, and the pupil shifted and scaled
            (`shifted_pupil`); None: the config's nominal system.
    """

    def __init__(
        self,
        cfg: SimConfig,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        system: tuple[float, ...] | np.ndarray | None = None,
    ) -> None:
        if system is not None:
            system = tuple(float(x) for x in system)
            if len(system) != len(SYSTEM_FIELDS):
                raise ValueError(f"system needs {len(SYSTEM_FIELDS)} values {SYSTEM_FIELDS}")
            cfg = cfg.with_overrides(
                **{
                    "mask.diameter_lambda0_d": cfg.mask.diameter_lambda0_d * system[0],
                    "mask.opd_depth_nm": cfg.mask.opd_depth_nm * system[1],
                }
            )
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
        if system is not None and system[2:] != NOMINAL_SYSTEM[2:]:
            sys_t = torch.tensor(system, dtype=e.pupil.dtype, device=self.device)
            pupil = shifted_pupil(cfg.pupil.npix, sys_t)
            self.amplitude = pupil / e.clear_mean.sqrt()  # normalised as the nominal pupil
            self.lit = (pupil > 0).cpu().numpy()
        self.system = NOMINAL_SYSTEM if system is None else system
        self.npix = cfg.pupil.npix
        self.n_wavelengths = len(cfg.wavelengths_um)
        self.pupil_pixels = int(e.detector_mask.sum())
        self._low_rank: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}

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

    def low_rank_dot(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The dot operator's separable terms (out, inp) (L, r, N, N) on the lit pupil.

        `RealBabinet.low_rank` truncated at 1e-7 (float32) or 1e-12 (float64) of the
        largest singular value: r ~ 17 or 36 terms, against the 2M' = 36 focal rows per
        axis of the separable form. Built once per dtype from the float64 operator
        (0.3-0.6 s at 64 px, 1.3-2.5 s at 128 px on 2 CPU cores).
        """
        dtype = dtype or self.dtype
        if dtype not in self._low_rank:
            rtol = 1e-12 if dtype == torch.float64 else 1e-7
            lit = torch.as_tensor(self.lit, device=self.device)
            op = self.engine.dot_operator
            if op.v.dtype != torch.float64:  # factor the exact operator, not its rounding
                exact = self.cfg.model_copy(update={"precision": "complex128"})
                with torch.no_grad():
                    op = ZWFSModel(exact, self.device).dot_operator
            out, inp = op.low_rank(lit, rtol)
            self._low_rank[dtype] = (out.to(dtype), inp.to(dtype))
        return self._low_rank[dtype]

    def jvp(
        self,
        lin: Linearisation,
        tangents_nm: torch.Tensor,
        dtype: torch.dtype | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """dI for K tangents: (B, K, N, N), or (K, N, N) shared by every sample, [nm]
        -> (B, K, L, N, N) [per nm], a transposed view of (B, L, K, N, N) storage.

        dI = 2 k (v s - E . T(i e v)), s = E . (i e). T acts on the pupil-supported i e v
        through its r separable terms (`low_rank_dot`): the projections <inp_r, i e v>
        for all K tangents are one matrix product, and E . T(...) another, against the
        (E . mix) out_r maps; in `dtype` (default the model's). `weights` (B, L, N, N):
        return w dI instead (folded into the small factors: no extra pass).
        """
        dtype = dtype or self.dtype
        e_in, e_out = lin.e_in.to(dtype), lin.e_out.to(dtype)
        k = self.k.to(dtype)
        out, inp = self.low_rank_dot(dtype)  # (L, r, N, N)
        b, n_l, _, n, _ = e_in.shape
        n_r = out.shape[1]
        # s = E . (i e) per wavelength: (B, L, N, N)
        local = (e_out[:, :, 1] * e_in[:, :, 0] - e_out[:, :, 0] * e_in[:, :, 1]) * k
        if weights is not None:
            local = local * weights.to(dtype)
        i_e = torch.stack((-e_in[:, :, 1], e_in[:, :, 0]), dim=2)  # (B, L, 2, N, N)
        probe = (i_e[:, :, :, None] * inp[None, :, None]).reshape(b, n_l * 2 * n_r, n * n)
        v = tangents_nm.to(dtype)
        shared = v.dim() == 3
        n_k = v.shape[-3]
        if shared:  # one product for the whole batch: (B L 2 r, N^2) @ (N^2, K)
            coeff = (probe.reshape(-1, n * n) @ v.reshape(n_k, n * n).T).reshape(b, -1, n_k)
        else:
            coeff = probe @ v.reshape(b, n_k, n * n).transpose(1, 2)  # (B, L 2 r, K)
        # E . mix T(.) = sum_d (sum_c E_c mix[c, d]) T(.)_d: the maps (E . mix)_d out_r, with
        # the factor -2 k folded in; accumulated onto 2 k s v in one pass (baddbmm)
        e_mix = torch.einsum("blcxy,lcd->bldxy", e_out, self.mix.to(dtype) * (-2 * k))
        if weights is not None:
            e_mix = e_mix * weights.to(dtype)[:, :, None]
        maps = (e_mix[:, :, :, None] * out[None, :, None]).reshape(b * n_l, 2 * n_r, n * n)
        coeff = coeff.reshape(b, n_l, 2 * n_r, n_k).transpose(2, 3).reshape(b * n_l, n_k, -1)
        if shared:
            v = v.reshape(1, 1, n_k, n * n)
        else:
            v = v.reshape(b, 1, n_k, n * n)
        d_i = (2 * local).reshape(b, n_l, 1, n * n) * v  # (B, L, K, N^2)
        d_i = torch.baddbmm(d_i.reshape(b * n_l, n_k, n * n), coeff, maps)
        return d_i.reshape(b, n_l, n_k, n, n).transpose(1, 2)  # (B, K, L, N, N), a view

    def vjp(self, lin: Linearisation, cotangent: torch.Tensor) -> torch.Tensor:
        """J^T u: intensity cotangents (B, L, N, N) -> OPD gradient (B, N, N) [per nm].

        T's adjoint (T with the mix transposed) is needed on the lit pupil only, where
        e is: there it is the transpose of `jvp`'s low-rank form, so the two are an exact
        adjoint pair.
        """
        out, inp = self.low_rank_dot()
        g_out = 2 * lin.e_out * cotangent[:, :, None]  # (B, L, 2, N, N)
        coeff = torch.einsum("lrxy,bldxy->bldr", out, g_out)
        coeff = torch.einsum("lcd,bldr->blcr", self.mix_t, coeff)
        g_in = g_out - torch.einsum("blcr,lrxy->blcxy", coeff, inp)  # valid on the lit pupil
        g_phi = -lin.e_in[:, :, 1] * g_in[:, :, 0] + lin.e_in[:, :, 0] * g_in[:, :, 1]
        return (g_phi * self.k).sum(dim=1)  # (B, L, N, N) -> (B, N, N)

    def modal_jacobian(
        self,
        lin: Linearisation,
        basis: torch.Tensor,
        dtype: torch.dtype | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """dI/dc for unit-RMS modes `basis` (J, N, N): (B, J, L, N, N) [per nm RMS].

        Forward mode over the J columns shared by the batch (`jvp`), in `dtype`.
        """
        return self.jvp(lin, basis, dtype, weights)
