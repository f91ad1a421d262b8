"""Each pixel's best branch: the zonal fit's escape from one-pixel local minima.

A pixel's intensity at wavelength l is |A exp(i k_l z) - R_l|^2, R = T(e) the reference
wave that the dot passes. R depends on the whole pupil, so one pixel's OPD z barely moves
it, and each pixel is then a one-dimensional problem: a cosine of z per wavelength. The
three close wavelengths (0.96-1.0 um) have nearly the same cosine, so a pixel has a second
valley, its mirror about the cosines' common extremum (~50-200 nm away), that only the
1.2 um frame tells apart. A Gauss-Newton fit of all pixels together (`refine_zonal`)
leaves a few pixels in that valley: noiseless, 1-4 pixels 70-80 nm off in 9 of 20
fits of modes + 20 nm beyond them (1-2.6 nm RMS over the pupil).

`pixel_branches` scans each lit pixel's OPD over +-span [nm] with R held, refines every
valley of the scan by a parabola through its three grid points, and moves the pixels whose
lowest valley lies in another basin than their current value and fits better.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.stats import chi2

from recon.refine.forward import FrameModel
from recon.refine.noise import NoiseModel

__all__ = [
    "BRANCH_FALSE_MOVES",
    "BRANCH_SPAN_NM",
    "BRANCH_STEP_NM",
    "VALLEY_NM",
    "branch_margin",
    "pixel_branches",
]

BRANCH_SPAN_NM = 500.0
"""Each pixel's scan: +- this [nm] around its current OPD (the second valley lies within
~200 nm at 0.96-1.2 um), and half of it around its neighbours' median."""

BRANCH_STEP_NM = 5.0
"""The scan's step [nm]: a valley spans ~lambda / 4 = 250 nm, and the parabola through
three points 5 nm apart has its value to ~(2 k h)^4 / 24 = 8e-7 of the fringe's depth
(the deviance is a squared cosine); the exact deviances then decide."""

BRANCH_FALSE_MOVES = 0.01
"""With photon noise, a pixel moves only when its deviance falls by more than the chi^2_1
quantile of BRANCH_FALSE_MOVES / (lit pixels) (21.7 at 64 px): a likelihood-ratio test
per pixel, Bonferroni-corrected to ~0.01 moves per sample from the noise alone (an
approximation: two valleys are not nested models). Without a margin, at 1e7 photons the
dim-fringe pixels follow the noise into other valleys (the zonal fit's error went from
0.93x to 1.67x its Cramer-Rao bound at 225-425 nm RMS)."""

VALLEY_NM = 25.0
"""A valley within this [nm] of the pixel's value is its own (a dim edge pixel's own
valley moves a few nm with the reference wave). A second valley closer than this, near
a fringe's extremum, is not searched: its error is at most this much on one pixel."""


@torch.no_grad()
def pixel_branches(
    model: FrameModel,
    frames: torch.Tensor,
    opd_nm: torch.Tensor,
    noise: NoiseModel,
    amplitude: torch.Tensor | None = None,
    span_nm: float = BRANCH_SPAN_NM,
    step_nm: float = BRANCH_STEP_NM,
) -> tuple[torch.Tensor, torch.Tensor]:
    """OPD maps (B, N, N) [nm] with each lit pixel moved to its best valley, and the mask
    (B, N, N) of the pixels moved (module docstring). Frames (B, L, N, N); `amplitude`:
    as `FrameModel.linearise`."""
    lin = model.linearise(opd_nm, amplitude)
    ref_re, ref_im = (lin.e_in - lin.e_out).unbind(2)  # R = T(e): (B, L, N, N) each
    amp = model.amplitude if amplitude is None else amplitude[:, None]
    k = model.k  # (L, 1, 1) [rad/nm]
    lit = torch.as_tensor(model.lit, device=opd_nm.device)

    def deviance(opd: torch.Tensor) -> torch.Tensor:
        phase = k * opd[:, None]
        re, im = amp * torch.cos(phase) - ref_re, amp * torch.sin(phase) - ref_im
        return noise.deviance(re.square() + im.square(), frames).sum(1)  # (B, N, N)

    home, home_at = torch.full_like(opd_nm, float("inf")), opd_nm.clone()
    best, best_at = home.clone(), opd_nm.clone()
    # around the pixel's value, and around its neighbours' median (a spike 250-1000 nm
    # off, seen at the pupil's grey edge and across the near-wraps of 0.96-1.0 um)
    for centre, span in ((opd_nm, span_nm), (_neighbour_median(opd_nm, lit), 0.5 * span_nm)):
        for value, at in _valleys(deviance, centre, span, step_nm):
            own = (at - opd_nm).abs() <= VALLEY_NM
            closer = own & (value < home)
            home, home_at = torch.where(closer, value, home), torch.where(closer, at, home_at)
            take = ~own & (value < best)
            best, best_at = torch.where(take, value, best), torch.where(take, at, best_at)
    # the parabolas chose the valleys; their exact deviances decide (noiseless, two
    # valleys can both be within the parabola's error of zero)
    stay = torch.minimum(deviance(opd_nm), deviance(home_at))
    margin = branch_margin(int(lit.sum())) if noise.noisy else 0.0
    move = (best < torch.inf) & (deviance(best_at) < stay - margin) & lit
    return torch.where(move, best_at, opd_nm), move


def branch_margin(pixels: int) -> float:
    """The deviance a move must gain with photon noise (`BRANCH_FALSE_MOVES`)."""
    return float(chi2.isf(BRANCH_FALSE_MOVES / pixels, 1))


def _valleys(deviance, centre: torch.Tensor, span_nm: float, step_nm: float):
    """Yields (value, OPD) (B, N, N) of each grid point of a scan of centre +- span that
    is a valley (lower than both neighbours), both refined by the parabola through the
    three points; value inf elsewhere."""
    n = round(span_nm / step_nm)
    before, mid = deviance(centre - n * step_nm), deviance(centre - (n - 1) * step_nm)
    for i in range(-n + 1, n):
        after = deviance(centre + (i + 1) * step_nm)
        curv = before - 2 * mid + after
        valley = (mid <= before) & (mid < after) & (curv > 0)
        shift = 0.5 * (before - after) / curv.clamp(min=1e-300)  # in steps, |shift| < 1
        value = torch.where(valley, mid - 0.25 * (before - after) * shift, torch.inf)
        yield value, centre + step_nm * (i + shift)
        before, mid = mid, after


def _neighbour_median(opd_nm: torch.Tensor, lit: torch.Tensor) -> torch.Tensor:
    """Each pixel's median (B, N, N) over its lit 8 neighbours (its own value where it
    has none)."""
    b, n, _ = opd_nm.shape
    masked = torch.where(lit, opd_nm, torch.nan)[:, None]
    patches = F.unfold(F.pad(masked, (1, 1, 1, 1), value=float("nan")), 3)  # (B, 9, N^2)
    patches = torch.cat([patches[:, :4], patches[:, 5:]], dim=1)  # without the centre
    median = patches.nanmedian(dim=1).values.reshape(b, n, n)
    return torch.where(torch.isnan(median), opd_nm, median)
