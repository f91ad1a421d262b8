"""The ZWFS optical model: batched semi-analytic (Babinet) MFT in PyTorch.

E_out = E_in - (1 - exp(i theta)) * IMFT(M * MFT(E_in))   (Soummer et al. 2007)

with E_in = P exp(i 2 pi OPD / lambda), M the dot footprint on a small focal box
(the only region where the mask differs from 1), theta the dot phase at lambda.
All samples and wavelengths run as matrix products; CPU or CUDA; complex64 by
default; differentiable from intensities back to the OPD.

The dot operator T = IMFT(M MFT(.)) acts on pupil fields only, and restricted to the lit
pupil it has about 17 singular values above 1e-7 of the largest (a field reaches a dot of
one lambda/D through a handful of Slepian-like terms): `forward` without gradients runs
it as those r separable terms, T(E) = sum_k out_k <inp_k, E> (`RealBabinet.low_rank_gram`),
where the truncation (1e-7 of the operator norm) is below float32 rounding; the exact
separable MFT is the `dot="exact"` path and the float64 engine's default.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from data.schema import pupil_mask
from sim.babinet import DotGrid, RealBabinet
from sim.config import SimConfig
from sim.detector import bin_frames
from sim.mask import dot_footprint, dot_phase_rad, focal_coordinates
from sim.pupil import pupil_coordinates_m, pupil_transmission
from sim.zernike import zernike_basis

__all__ = ["LOW_RANK_RTOL", "ZWFSModel", "dot_mix"]

LOW_RANK_RTOL = 1e-7
"""Truncation of the low-rank dot: the singular values kept are above this fraction of the
largest (the relative error of T on lit-pupil fields, in operator norm)."""


def dot_mix(theta_rad: torch.Tensor) -> torch.Tensor:
    """1 - e^{i theta} acting on (re, im) pairs, (L,) -> (L, 2, 2):
    [[1 - cos, sin], [-sin, 1 - cos]] (differentiable in theta)."""
    cos, sin = torch.cos(theta_rad), torch.sin(theta_rad)
    return torch.stack((torch.stack((1 - cos, sin), -1), torch.stack((-sin, 1 - cos), -1)), -2)


class ZWFSModel(torch.nn.Module):
    """Batched ZWFS: OPD maps [nm] -> normalised intensities at every wavelength.

    forward(opd_nm (B, N, N)) -> intensity (B, L, N/b, N/b), divided by the mean
    clear-pupil intensity inside the pupil at the same wavelength.

    dot: how `forward` applies the dot without gradients: "low_rank" (its r terms on
    the lit pupil, built on first use, ~0.1-0.2 s), "exact" (the separable MFT), or
    "auto": low_rank in float32, where its truncation is below the rounding, exact in
    float64. Gradients, `fields` and `field_parts` always take the exact path.
    """

    def __init__(
        self,
        cfg: SimConfig,
        device: str | torch.device = "cpu",
        antialias: bool | None = None,
        dot: Literal["auto", "exact", "low_rank"] = "auto",
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.real_dtype = torch.float64 if cfg.precision == "complex128" else torch.float32
        if dot not in ("auto", "exact", "low_rank"):
            raise ValueError(f"dot must be auto, exact or low_rank, got {dot!r}")
        if dot == "auto":
            dot = "low_rank" if self.real_dtype == torch.float32 else "exact"
        self.dot = dot
        self._low_rank_terms: tuple[torch.Tensor, torch.Tensor] | None = None
        antialias = cfg.focal.antialias if antialias is None else antialias
        npix, q = cfg.pupil.npix, cfg.focal.samples_per_lambda0_d

        self.antialias = antialias
        pupil = pupil_transmission(cfg.pupil)
        u = focal_coordinates(cfg.focal_box_samples, q)  # [lambda0/D]
        footprint = dot_footprint(u, cfg.mask.diameter_lambda0_d, antialias)
        theta = dot_phase_rad(cfg.wavelengths_um, cfg.mask)
        ratio = cfg.mask.lambda0_um / np.asarray(cfg.wavelengths_um)  # lambda0 / lambda
        # MFT there and back, per axis: dx * du / lambda = (lambda0/lambda) / (N q).
        self.register_buffer("mft_norm", torch.as_tensor((ratio / (npix * q)) ** 2)[:, None, None])
        weights = self.mft_norm.numpy() * footprint  # (L, M, M)
        x = pupil_coordinates_m(npix, cfg.pupil.diameter_m) / cfg.pupil.diameter_m  # [D]
        self.register_buffer("focal_u", torch.as_tensor(u))
        self._dot_grid = DotGrid(x, u, ratio, weights)
        self.dot_operator = RealBabinet(self._dot_grid, self.real_dtype)

        self.register_buffer("pupil", torch.as_tensor(pupil, dtype=self.real_dtype))
        self.register_buffer("mask", torch.as_tensor(pupil_mask(pupil)))
        self.register_buffer("theta_rad", torch.as_tensor(theta, dtype=self.real_dtype))
        wavenumber = 2 * np.pi / (np.asarray(cfg.wavelengths_um) * 1e3)  # [rad/nm]
        self.register_buffer(
            "wavenumber_per_nm", torch.as_tensor(wavenumber[:, None, None], dtype=self.real_dtype)
        )
        self.register_buffer("dot_mix", dot_mix(torch.as_tensor(theta)).to(self.real_dtype))
        clear = bin_frames(self.pupil**2, cfg.detector.binning)
        binned_mask = pupil_mask(bin_frames(self.pupil, cfg.detector.binning).cpu().numpy())
        self.register_buffer("detector_mask", torch.as_tensor(binned_mask))
        self.register_buffer("clear_mean", clear[self.detector_mask].mean())
        # field amplitude scaled so that intensities come out clear-pupil normalised
        self.register_buffer("amplitude", self.pupil / self.clear_mean.sqrt())
        self.to(device)

    @property
    def wavelengths_um(self) -> list[float]:
        """Wavelengths [um], in model order."""
        return list(self.cfg.wavelengths_um)

    def basis(self) -> torch.Tensor:
        """Zernike basis (M, N, N) of the configured modes on this model's grid and device
        (a segmented pupil's corners, lit outside the circle, carry the polynomials on)."""
        pupil = self.cfg.pupil
        clip = pupil.geometry != "segmented"
        z = zernike_basis(self.cfg.aberration.modes, pupil.npix, pupil.diameter_m, clip)
        if not clip:  # on the lit pixels only: 0 outside the pupil, as the file says
            z = z * (self.pupil.cpu().numpy() > 0)
        return torch.as_tensor(z, dtype=self.real_dtype, device=self.pupil.device)

    def dot_kernel(self, diameter_scale: torch.Tensor) -> torch.Tensor:
        """The dot operator's kernel (`RealBabinet.fold_kernel`) for a dot `diameter_scale`
        x the config's, float64, differentiable in the scale (calibration fits it)."""
        diameter = diameter_scale * self.cfg.mask.diameter_lambda0_d
        footprint = dot_footprint(self.focal_u, diameter, self.antialias)
        return self.dot_operator.fold_kernel(self.mft_norm * footprint)

    def dot_mix_at(self, depth_scale: torch.Tensor) -> torch.Tensor:
        """`dot_mix` (L, 2, 2) for a dot `depth_scale` x the config's depth (the phase
        scales with the depth at every wavelength), float64, differentiable."""
        return dot_mix(self.theta_rad.to(torch.float64) * depth_scale)

    def input_field(
        self, opd_nm: torch.Tensor, amplitude: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Real and imaginary parts (B, L, 2, N, N) of the pupil field A exp(i k OPD) for OPD
        maps (B, N, N) [nm]; `amplitude` (N, N) or one per sample (B, N, N): None for the
        nominal pupil."""
        phase = opd_nm[:, None] * self.wavenumber_per_nm  # (B, N, N) -> (B, L, N, N)
        amp = self.amplitude if amplitude is None else amplitude
        if amp.dim() == 3:  # one per sample: (B, N, N) -> (B, 1, 1, N, N)
            amp = amp[:, None, None]
        return torch.stack((torch.cos(phase), torch.sin(phase)), dim=2) * amp

    def fields(
        self,
        opd_nm: torch.Tensor,
        amplitude: torch.Tensor | None = None,
        kernel: torch.Tensor | None = None,
        mix: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Input and output fields (B, L, 2, N, N) for OPD maps (B, N, N) [nm], differentiable
        (the one forward model of refinement and calibration).

        amplitude, kernel, mix: a calibrated system's (`sim.system.system_terms`); None:
        the config's nominal pupil and dot.
        """
        e_in = self.input_field(opd_nm, amplitude)
        mix = self.dot_mix if mix is None else mix
        # E_out = E_in - (1 - e^{i theta}) T(E_in), the complex factor as a 2 x 2 real mix
        return e_in, e_in - self.dot_operator(e_in, mix, kernel)

    def field_parts(self, opd_nm: torch.Tensor) -> torch.Tensor:
        """Real and imaginary parts (B, L, 2, N, N) of the output field for OPD (B, N, N) [nm].

        In units of the square root of the mean clear-pupil intensity.
        """
        opd = opd_nm.to(device=self.pupil.device, dtype=self.real_dtype)
        if torch.is_grad_enabled() and opd.requires_grad:
            return self.fields(opd)[1]
        # inference: the same arithmetic in place, two fewer passes over (B, L, 2, N, N)
        phase = opd[:, None] * self.wavenumber_per_nm  # (B, N, N) -> (B, L, N, N)
        e_in = phase.new_empty(*phase.shape[:2], 2, *phase.shape[2:])
        torch.cos(phase, out=e_in[:, :, 0])  # torch 2.13: 1.25x numpy 2.4 on a CPU core
        torch.sin(phase, out=e_in[:, :, 1])
        e_in.mul_(self.amplitude)
        return e_in.sub_(self.dot_operator(e_in, self.dot_mix))

    def field(self, opd_nm: torch.Tensor) -> torch.Tensor:
        """Complex re-imaged pupil field (B, L, N, N) for OPD maps (B, N, N) [nm]."""
        parts = self.field_parts(opd_nm)
        return torch.complex(parts[:, :, 0], parts[:, :, 1])

    def low_rank_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The dot on the lit pupil as (out (L, r, N^2), inp^T (L, N^2, r)) in the model's
        dtype: `RealBabinet.low_rank_gram` at `LOW_RANK_RTOL`, built once in float64
        (`low_rank_dropped`: per wavelength, the first singular value left out over the
        largest)."""
        if self._low_rank_terms is None or self._low_rank_terms[0].device != self.pupil.device:
            # factor the float64 operator of the same dot, not its float32 rounding; on one
            # thread: small eighs that threads only slow (100x on a busy 2-core machine)
            exact = RealBabinet(self._dot_grid, torch.float64).to(self.pupil.device)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                self.low_rank_dropped: list[float] = []
                out, inp = exact.low_rank_gram(
                    self.pupil > 0, LOW_RANK_RTOL, None, self.low_rank_dropped
                )
            finally:
                torch.set_num_threads(threads)
            n_l, r, n, _ = out.shape
            out = out.reshape(n_l, r, n * n).to(self.real_dtype).contiguous()
            inp_t = inp.reshape(n_l, r, n * n).transpose(1, 2).to(self.real_dtype).contiguous()
            self._low_rank_terms = (out, inp_t)
        return self._low_rank_terms

    def _low_rank_intensity(self, opd_nm: torch.Tensor) -> torch.Tensor:
        """Intensities (B, L, N, N) through the low-rank dot, one wavelength at a time (the
        field of one wavelength stays in cache), without gradients."""
        out, inp_t = self.low_rank_terms()
        opd = opd_nm.to(device=self.pupil.device, dtype=self.real_dtype).contiguous()
        b, n, r = opd.shape[0], opd.shape[-1], out.shape[1]
        result = opd.new_empty(b, len(self.cfg.wavelengths_um), n, n)
        e = opd.new_empty(b, 2, n, n)
        phase = torch.empty_like(opd)
        flat = e.view(2 * b, n * n)
        for li in range(result.shape[1]):
            torch.mul(opd, self.wavenumber_per_nm[li], out=phase)
            torch.cos(phase, out=e[:, 0])
            torch.sin(phase, out=e[:, 1])
            e.mul_(self.amplitude)
            coeff = self.dot_mix[li] @ (flat @ inp_t[li]).view(b, 2, r)  # <inp_k, E>, mixed
            flat.addmm_(coeff.view(2 * b, r), out[li], alpha=-1)  # E - sum_k coeff_k out_k
            torch.mul(e[:, 0], e[:, 0], out=result[:, li])
            result[:, li].addcmul_(e[:, 1], e[:, 1])
        return result

    def forward(self, opd_nm: torch.Tensor) -> torch.Tensor:
        """Normalised ZWFS intensities (B, L, N/b, N/b) for OPD maps (B, N, N) [nm]."""
        if self.dot == "low_rank" and not (torch.is_grad_enabled() and opd_nm.requires_grad):
            return bin_frames(self._low_rank_intensity(opd_nm), self.cfg.detector.binning)
        parts = self.field_parts(opd_nm)
        intensity = parts[:, :, 0].square() + parts[:, :, 1].square()  # -> (B, L, N, N)
        return bin_frames(intensity, self.cfg.detector.binning)

    def reference_clear(self) -> torch.Tensor:
        """Clear-pupil frames (L, H, W): no mask, no aberration, normalised."""
        clear = bin_frames(self.amplitude**2, self.cfg.detector.binning)
        return clear.expand(len(self.cfg.wavelengths_um), *clear.shape)

    def reference_zwfs(self) -> torch.Tensor:
        """ZWFS frames (L, H, W) with no aberration."""
        zero = torch.zeros(1, *self.pupil.shape, dtype=self.real_dtype, device=self.pupil.device)
        return self.forward(zero)[0]

    def reference_wave(self) -> torch.Tensor:
        """Reference wave b (L, N, N): the unaberrated pupil low-passed by the dot.

        b = IMFT(M MFT(P)), in units of the normalised clear-pupil amplitude: the b
        of the N'Diaye et al. (2013) model (real for this symmetric system).
        """
        amplitude = self.amplitude.expand(1, len(self.cfg.wavelengths_um), 1, -1, -1)
        return self.dot_operator(amplitude)[0, :, 0]  # (1, L, 1, N, N) -> (L, N, N)
