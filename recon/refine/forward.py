"""The ZWFS engine linearised: intensities, tangents (J v), adjoints (J^T u).

Fits and the Cramer-Rao bound need the engine's derivatives with respect to the OPD.
The engine (`sim.zwfs.ZWFSModel.fields`, the one forward model) is E = e - T(e),
e = A exp(i phi), phi_l = k_l OPD (k_l = 2 pi / lambda_l [rad/nm]), T the real, linear
Babinet dot operator with the 2 x 2 mix of (1 - exp(i theta)), and I = |E|^2. Hence, for
an OPD tangent v [nm]:

    de = (-Im e, Re e) k_l v,   dE = de - T(de),   dI = 2 (Re E dRe E + Im E dIm E),

and the adjoint runs the same steps backwards (T's adjoint is T with the mix
transposed: T = V^T (K * (V X V^T)) V is symmetric in X). A calibrated system
(`sim.system`) enters as the engine's own inputs: pupil amplitude, dot kernel, dot mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from recon.refine.noise import NoiseModel
from sim.config import SimConfig
from sim.system import NOMINAL_SYSTEM, SYSTEM_FIELDS, system_terms
from sim.zwfs import ZWFSModel

__all__ = ["FrameModel", "Linearisation", "TangentMap"]


@dataclass
class TangentMap:
    """J v for one OPD tangent per sample, at one linearisation (`FrameModel.tangent_map`):
    dI = 2 k s v - 2 k (E . mix) T(i e v), T through its low-rank terms, contracted
    tangent first (no (B, L, 2, r, N^2) product). Shapes: s_local (B, L, N, N) = 2 k s;
    i_e, mixed (B, L, 2, N, N), mixed = 2 k (E . mix); out, inp (L, r, N, N)."""

    s_local: torch.Tensor
    i_e: torch.Tensor
    mixed: torch.Tensor
    out: torch.Tensor
    inp: torch.Tensor

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """dI (B, L, N, N) [per nm] for tangents v (B, N, N) [nm]."""
        coeff = torch.einsum("lrxy,blcxy->blcr", self.inp, self.i_e * v[:, None, None])
        dot = torch.einsum("blcr,lrxy->blcxy", coeff, self.out)  # T(i e v): (B, L, 2, N, N)
        return self.s_local * v[:, None] - (self.mixed * dot).sum(2)

    def __getitem__(self, idx: torch.Tensor) -> TangentMap:
        return TangentMap(self.s_local[idx], self.i_e[idx], self.mixed[idx], self.out, self.inp)

    def pixel_fisher(self, inv_var: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """J^T diag(inv_var) J (B, K, K) for the K one-pixel tangents at flat `pixels` (K,)
        [per nm^2], inv_var (B, L, N, N): the zonal model's Fisher information.

        J = D + C M per wavelength: D the local term s_local on the pixel itself, C (K, 2r)
        the pixel's projections <inp_r, i_e_c>, M (2r, N^2) the maps -mixed_c out_r. So
        J^T W J = D W D + X C^T + C X^T with X = D W M^T + C (M W M^T) / 2 (M W M^T is
        symmetric), summed over the wavelengths as one (K, L 2r) x (L 2r, K) product: no
        (K, N^2) array, one (K, K) one."""
        b, n_l, n_c = self.i_e.shape[:3]
        n_r = self.out.shape[1]
        w = inv_var.flatten(2)  # (B, L, N^2)
        local = self.s_local.flatten(2)[:, :, pixels]  # (B, L, K)
        inp = self.inp.flatten(2)[None, :, None, :, pixels]  # (1, L, 1, r, K)
        c = self.i_e.flatten(3)[:, :, :, None, pixels] * inp
        c = c.reshape(b, n_l, n_c * n_r, -1).transpose(2, 3)  # (B, L, K, 2r)
        m = -self.mixed.flatten(3)[:, :, :, None] * self.out.flatten(2)[None, :, None]
        m = m.reshape(b, n_l, n_c * n_r, -1)  # (B, L, 2r, N^2)
        mwm = torch.einsum("blrp,blp,blsp->blrs", m, w, m)  # (B, L, 2r, 2r)
        dwm = (local * w[:, :, pixels])[..., None] * m[..., pixels].transpose(2, 3)  # (B,L,K,2r)
        x = (dwm + 0.5 * c @ mwm).transpose(1, 2).reshape(b, -1, n_l * n_c * n_r)  # (B,K,L2r)
        c = c.transpose(1, 2).reshape(b, -1, n_l * n_c * n_r)  # (B, K, L 2r)
        fisher = x @ c.transpose(1, 2)  # (B, K, K)
        fisher = fisher + fisher.transpose(1, 2)
        return fisher + torch.diag_embed((local.square() * w[:, :, pixels]).sum(1))


@dataclass
class Linearisation:
    """The engine's state at one OPD batch: input field e, output field E, intensity I.

    Shapes: e_in, e_out (B, L, 2, N, N) (real and imaginary parts, in units of the
    square root of the mean clear-pupil intensity); intensity (B, L, N, N).
    """

    e_in: torch.Tensor
    e_out: torch.Tensor
    intensity: torch.Tensor

    def __getitem__(self, idx: torch.Tensor) -> Linearisation:
        return Linearisation(self.e_in[idx], self.e_out[idx], self.intensity[idx])


class FrameModel:
    """The engine of a simulated system, with tangents and adjoints (module docstring).

    Args:
        cfg: the system (a dataset's ``config``); its detector binning must be 1.
        device: torch device.
        dtype: float64 (exact derivatives, tests, the Cramer-Rao bound) or float32 (the
            refinement's fields and Jacobians: intensities to ~1e-7, i.e. ~1e-5 nm).
        system: a calibrated system (`sim.system.SYSTEM_FIELDS`): the dot's diameter
            and depth scaled, the pupil shifted and scaled; None: the nominal system.
    """

    def __init__(
        self,
        cfg: SimConfig,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        system: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        if cfg.detector.binning != 1:
            raise ValueError(
                f"refinement needs detector.binning = 1 (the frames on the OPD grid), got "
                f"{cfg.detector.binning}"
            )
        self.cfg = cfg
        precision = "complex128" if dtype == torch.float64 else "complex64"
        with torch.no_grad():
            self.engine = ZWFSModel(cfg.model_copy(update={"precision": precision}), device)
        e = self.engine
        self.device = e.pupil.device
        self.dtype = dtype
        self.system = NOMINAL_SYSTEM if system is None else tuple(float(x) for x in system)
        if len(self.system) != len(SYSTEM_FIELDS):
            raise ValueError(f"system needs {len(SYSTEM_FIELDS)} values {SYSTEM_FIELDS}")
        if self.system == NOMINAL_SYSTEM:
            self.amplitude, self.kernel, self.mix = e.amplitude, e.dot_operator.kernel, e.dot_mix
        else:
            with torch.no_grad():
                self.amplitude, self.kernel, self.mix = system_terms(e, self.system)
        self.k = e.wavenumber_per_nm  # (L, 1, 1) [rad/nm]
        self.mix_t = self.mix.transpose(-1, -2).contiguous()
        self.mask = e.mask.cpu().numpy()  # (N, N) bool: the schema's "inside the pupil"
        self.lit = (self.amplitude > 0).cpu().numpy()  # (N, N) bool: the field's support
        self.npix = cfg.pupil.npix
        self.n_wavelengths = len(cfg.wavelengths_um)
        self.pupil_pixels = int(e.detector_mask.sum())
        self._low_rank: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}

    def noise(self) -> NoiseModel:
        """The config's detector noise (`NoiseModel.from_config`)."""
        return NoiseModel.from_config(self.cfg, self.pupil_pixels)

    def tensor(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """x as a tensor of this model's dtype on its device."""
        return torch.as_tensor(x, dtype=self.dtype, device=self.device)

    def linearise(
        self, opd_nm: torch.Tensor, amplitude: torch.Tensor | None = None
    ) -> Linearisation:
        """Fields and intensity (B, L, N, N) for OPD maps (B, N, N) [nm]; `amplitude`
        (B, N, N): each sample's measured pupil amplitude (`measured_amplitude`), else
        the system's."""
        amp = self.amplitude if amplitude is None else amplitude
        e_in, e_out = self.engine.fields(opd_nm, amp, self.kernel, self.mix)
        intensity = e_out[:, :, 0].square() + e_out[:, :, 1].square()
        return Linearisation(e_in, e_out, intensity)

    def intensity(
        self, opd_nm: torch.Tensor, amplitude: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Normalised intensities (B, L, N, N) for OPD maps (B, N, N) [nm]."""
        return self.linearise(opd_nm, amplitude).intensity

    def measured_amplitude(self, clear: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Pupil amplitudes (B, N, N) from clear-pupil frames (B, L, N, N), normalised as
        the frames: sqrt of their mean over the wavelengths on the lit pupil (0 off it,
        where a lab's clear frame is only noise). The low-rank dot keeps its support."""
        c = torch.as_tensor(clear, dtype=self.dtype, device=self.device).mean(dim=1)
        lit = torch.as_tensor(self.lit, device=self.device)
        return c.clamp_min(0.0).sqrt() * lit

    def low_rank_dot(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The dot operator's separable terms (out, inp) (L, r, N, N) on the lit pupil.

        `RealBabinet.low_rank` truncated at 1e-7 (float32) or 1e-12 (float64) of the
        largest singular value: r ~ 17 or 36 terms, against the 2M' = 36 focal rows per
        axis of the separable form. Built once per dtype from the float64 operator of
        this system's dot (0.3-0.6 s at 64 px, 1.3-2.5 s at 128 px on 2 CPU cores).
        """
        dtype = dtype or self.dtype
        if dtype not in self._low_rank:
            rtol = 1e-12 if dtype == torch.float64 else 1e-7
            lit = torch.as_tensor(self.lit, device=self.device)
            exact = self._exact_engine()  # factor the exact operator, not its rounding
            with torch.no_grad():
                kernel = system_terms(exact, self.system)[1]
            out, inp = exact.dot_operator.low_rank(lit, rtol, kernel)
            self._low_rank[dtype] = (out.to(dtype), inp.to(dtype))
        return self._low_rank[dtype]

    def _exact_engine(self) -> ZWFSModel:
        if self.engine.real_dtype == torch.float64:
            return self.engine
        exact = self.cfg.model_copy(update={"precision": "complex128"})
        with torch.no_grad():
            return ZWFSModel(exact, self.device)

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
        v = tangents_nm.to(dtype)
        shared = v.dim() == 3
        n_k = v.shape[-3]
        if not shared and n_k == 1:  # one tangent per sample (zonal): no (B, L, 2, r, N^2)
            d_i = self.tangent_map(lin, dtype)(v[:, 0])
            return (d_i if weights is None else d_i * weights.to(dtype))[:, None]
        probe = (i_e[:, :, :, None] * inp[None, :, None]).reshape(b, n_l * 2 * n_r, n * n)
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

    def tangent_map(self, lin: Linearisation, dtype: torch.dtype | None = None) -> TangentMap:
        """`jvp` for one tangent per sample at `lin`, its factors computed once (what the
        conjugate-gradient steps of a zonal fit apply again and again)."""
        dtype = dtype or self.dtype
        e_in, e_out = lin.e_in.to(dtype), lin.e_out.to(dtype)
        k = self.k.to(dtype)
        out, inp = self.low_rank_dot(dtype)
        s_local = (e_out[:, :, 1] * e_in[:, :, 0] - e_out[:, :, 0] * e_in[:, :, 1]) * (2 * k)
        i_e = torch.stack((-e_in[:, :, 1], e_in[:, :, 0]), dim=2)  # (B, L, 2, N, N)
        mixed = torch.einsum("blcxy,lcd->bldxy", e_out, self.mix.to(dtype) * (2 * k))
        return TangentMap(s_local, i_e, mixed, out, inp)

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

    modal_jacobian = jvp
    """dI/dc (B, J, L, N, N) [per nm RMS] for unit-RMS modes (J, N, N): `jvp` with the
    modes as the tangents shared by the batch."""

    def modal_vjp(self, lin: Linearisation, cotangent: torch.Tensor, basis: torch.Tensor):
        """J^T u over the modes: intensity cotangents (B, L, N, N) -> (B, J) [per nm RMS]
        for unit-RMS modes (J, N, N); `vjp` projected on them (one adjoint pass, exact:
        a fit's gradient without its Jacobian)."""
        return self.vjp(lin, cotangent).flatten(1) @ basis.flatten(1).T
