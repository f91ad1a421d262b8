"""Random Zernike aberrations, deterministic per sample.

Sample i of seed s (and stream, e.g. the split) draws from its own generator
`numpy.random.default_rng([s, stream, i])`, so it is the same whatever the batch
size, the device or the number of processes. Maps are rescaled so that the OPD
RMS on the sampled pupil (piston removed) is exactly the drawn value.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from sim.config import AberrationConfig
from sim.zernike import radial_order

__all__ = [
    "Aberrations",
    "draw_aberrations",
    "draw_coefficients",
    "opd_from_coefficients",
    "pupil_rms",
    "sample_opd",
    "stream_id",
]


def stream_id(name: str) -> int:
    """Stable integer for a stream name (e.g. the split) that enters every sample's seed."""
    return zlib.crc32(name.encode())


def _direction(rng: np.random.Generator, std: np.ndarray) -> np.ndarray:
    v = rng.standard_normal(std.size) * std
    return v / np.linalg.norm(v)


def draw_coefficients(
    cfg: AberrationConfig,
    indices: np.ndarray,
    seed: int,
    stream: int = 0,
    n_total: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients (B, M) [nm, before exact rescaling] and target RMS (B,) [nm].

    indices: global sample indices; n_total: the dataset size (needed by "grid",
    which spaces the RMS linearly over the samples).
    """
    modes = np.asarray(cfg.modes)
    if cfg.distribution == "power_law":
        std = np.array([radial_order(j) for j in modes], dtype=float) ** -cfg.power_law_index
    else:
        std = np.ones(modes.size)
    coeffs = np.zeros((len(indices), modes.size))
    rms = np.zeros(len(indices))
    for row, i in enumerate(np.asarray(indices, dtype=np.int64)):
        rng = np.random.default_rng([seed, stream, int(i)])
        if cfg.distribution == "grid":
            if n_total is None:
                raise ValueError("the 'grid' distribution needs n_total (the dataset size)")
            frac = i / max(n_total - 1, 1)
            rms[row] = cfg.rms_min_nm + frac * (cfg.rms_max_nm - cfg.rms_min_nm)
        else:
            rms[row] = rng.uniform(cfg.rms_min_nm, cfg.rms_max_nm)
        if cfg.distribution == "single_mode":
            coeffs[row, modes == cfg.single_mode] = rms[row]
        else:
            coeffs[row] = rms[row] * _direction(rng, std)
    return coeffs, rms


def pupil_rms(opd: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMS (B,) of maps (B, H, W) over the boolean pupil mask, piston removed.

    Two masked sums as matrix-vector products: no gather of the pupil pixels.
    """
    w = mask.reshape(-1).to(opd.dtype)  # (H*W,)
    flat = opd.reshape(opd.shape[0], -1)  # (B, H, W) -> (B, H*W)
    n = w.sum()
    mean = (flat @ w) / n
    var = (flat.square() @ w) / n - mean.square()
    return var.clamp_min(0).sqrt()


MAP_TILE = 16
"""Rows per map product: every map is made in a zero-padded tile of this many rows, so
its rounding never depends on the batch it is made in (a GEMM's may depend on its shape)."""


def _maps(coeffs: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """coeffs (B, M) @ flat (M, P) in fixed tiles of MAP_TILE rows, float64."""
    b = coeffs.shape[0]
    pad = (-b) % MAP_TILE
    padded = torch.cat((coeffs, coeffs.new_zeros(pad, coeffs.shape[1]))) if pad else coeffs
    tiles = [t @ flat for t in padded.split(MAP_TILE)]  # each (MAP_TILE, M) @ (M, P)
    return torch.cat(tiles)[:b]


def opd_from_coefficients(
    coeffs: torch.Tensor, rms: torch.Tensor, basis: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """OPD maps (B, H, W) with RMS exactly `rms`, and the matching coefficients (B, M).

    coeffs (B, M) and rms (B,) in nm; basis (M, H, W); mask (H, W) bool. The
    returned coefficients are rescaled with the map, so opd = sum_j c_j Z_j holds.
    Maps are float64 products in fixed tiles (see MAP_TILE), then cast to the input
    dtype: a sample's map does not depend on the batch it is made in.
    """
    dtype = coeffs.dtype
    flat = basis.reshape(basis.shape[0], -1).to(torch.float64)  # (M, H*W)
    c64 = coeffs.to(torch.float64)
    opd = _maps(c64, flat).reshape(-1, *basis.shape[1:])  # (B, H, W)
    current = pupil_rms(opd, mask)
    rms64 = rms.to(torch.float64)
    scale = torch.where(current > 0, rms64 / current.clamp_min(1e-300), torch.zeros_like(rms64))
    return (opd * scale[:, None, None]).to(dtype), (c64 * scale[:, None]).to(dtype)


def sample_opd(
    aberration: AberrationConfig,
    basis: torch.Tensor,
    mask: torch.Tensor,
    rms_nm: list[float],
    seed: int = 0,
) -> torch.Tensor:
    """OPD maps (B, N, N) [nm], random directions of `seed`, with exactly the given RMS values."""
    coeffs, _ = draw_coefficients(aberration, np.arange(len(rms_nm)), seed)
    rms = torch.tensor(rms_nm, dtype=basis.dtype)
    opd, _ = opd_from_coefficients(torch.as_tensor(coeffs, dtype=basis.dtype), rms, basis, mask)
    return opd


@dataclass
class Aberrations:
    """A batch of OPD maps and what made them.

    opd (B, N, N) [nm] (0 outside the modes' support); coefficients (B, M) [nm RMS]: the
    modes' part (mixture) or the least-squares projection (screen); rms (B,) [nm] of the
    whole map over the pupil, piston removed; classes (B,) int8, indices of
    `data.schema.ABERRATION_CLASSES`.
    """

    opd: torch.Tensor
    coefficients: torch.Tensor
    rms: torch.Tensor
    classes: np.ndarray


CLASS_STREAM = 4
"""The fourth element of a sample's generator key for its class (a blend's choice)."""


def _classes(cfg: AberrationConfig, indices: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """Class index per sample: the config's kind, or a seeded draw for a blend."""
    kinds = {"modes": 0, "screen": 1, "mixture": 2}
    if cfg.kind != "blend":
        return np.full(len(indices), kinds[cfg.kind], dtype=np.int8)
    p = np.asarray(cfg.blend_weights, dtype=float)
    p = p / p.sum()
    out = np.empty(len(indices), dtype=np.int8)
    for row, i in enumerate(np.asarray(indices, dtype=np.int64)):
        out[row] = np.random.default_rng([seed, stream, int(i), CLASS_STREAM]).choice(3, p=p)
    return out


def draw_aberrations(
    cfg: AberrationConfig,
    indices: np.ndarray,
    seed: int,
    stream: int,
    basis: torch.Tensor,
    mask: torch.Tensor,
    diameter_m: float,
    n_total: int | None = None,
) -> Aberrations:
    """Sample `indices`' OPD maps of the config's class (`AberrationConfig.kind`).

    modes: `draw_coefficients` and `opd_from_coefficients`, as always. screen: a
    power-law screen (`sim.screens`) with the drawn RMS. mixture: the modes' map plus a
    screen with every component along piston and the modes removed, scaled to
    `high_order_rms_nm`. basis (M, N, N) and mask (N, N) on the maps' device and dtype.
    """
    from sim.screens import power_law_screens

    coeffs, rms = draw_coefficients(cfg, indices, seed, stream, n_total)
    dtype, dev = basis.dtype, basis.device
    opd, c = opd_from_coefficients(
        torch.as_tensor(coeffs, dtype=dtype, device=dev),
        torch.as_tensor(rms, dtype=dtype, device=dev),
        basis,
        mask,
    )
    classes = _classes(cfg, indices, seed, stream)
    rows = np.nonzero(classes > 0)[0]
    if rows.size:
        npix = basis.shape[-1]
        outer = None if cfg.outer_scale_m is None else cfg.outer_scale_m / diameter_m
        screens = power_law_screens(
            np.asarray(indices)[rows], seed, stream, npix, cfg.screen_index, outer, device=dev
        )
        support = (basis[0] != 0).to(torch.float64)  # where the modes live
        full = torch.cat((support[None], basis.to(torch.float64)))  # piston and the modes
        flat = full[:, mask]  # (M + 1, P): fitted over the pupil
        for k, row in enumerate(rows):
            s = screens[k] * support
            if classes[row] == 1:  # screen: piston removed, the drawn RMS
                s = s - s[mask].mean()
                target = float(rms[row])
            else:  # mixture: the screen less its fit by piston and the modes, own RMS
                fit = torch.linalg.lstsq(flat.T, s[mask][:, None]).solution[:, 0]  # (M + 1,)
                s = (s - torch.einsum("j,jhw->hw", fit, full)) * support
                target = cfg.high_order_rms_nm
            scale = target / float(pupil_rms(s[None], mask)[0].clamp_min(1e-300))
            s = s * scale
            if classes[row] == 1:
                opd[row] = s.to(dtype)
                proj = torch.linalg.lstsq(flat.T, s[mask][:, None]).solution[1:, 0]
                c[row] = proj.to(dtype)  # its projection on the modes [nm RMS]
            else:
                opd[row] = opd[row] + s.to(dtype)
    total = pupil_rms(opd.to(torch.float64), mask).to(dtype)
    return Aberrations(opd, c, total, classes)
