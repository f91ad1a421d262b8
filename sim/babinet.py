"""The Babinet focal-dot operator T(E) = IMFT(M * MFT(E)) in real arithmetic.

Pupil and focal grids are symmetric about 0 and the dot is even, so the MFT
matrix A = C - i S splits into an even cosine part C and an odd sine part S, and
the focal sums over +u and -u fold into sums over u >= 0. With the real (M', N)
matrix V = [C; S] over the focal samples u_k >= 0 (M' = M for M even):

    T(E) = V^T (K * (V E V^T)) V,   K = footprint x MFT normalisation x fold weights

where the factors -i (forward) and +i (inverse) of the sine parts cancel. T is real
and linear, so the real and imaginary parts of a field go through it separately:
half the arithmetic of the complex matrix products, and no complex dtype at all.
`MatrixBabinet` is the plain complex form, kept as the cross-check.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

__all__ = ["DotGrid", "MatrixBabinet", "RealBabinet"]


class DotGrid(NamedTuple):
    """The grids of the dot operator: x, the pupil pixel centres [D] (N,); u, the focal
    sample centres [lambda0/D] (M,), symmetric; ratio, lambda0 / lambda (L,); weights,
    the dot footprint times the MFT normalisation (L, M, M), even in both axes."""

    x: np.ndarray
    u: np.ndarray
    ratio: np.ndarray
    weights: np.ndarray


def _half_grid_weights(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the samples u >= 0 and their fold weight (2 off axis, 1 on it)."""
    keep = np.flatnonzero(u >= -1e-12 * np.abs(u).max())
    weight = np.where(np.abs(u[keep]) < 1e-12 * np.abs(u).max(), 1.0, 2.0)
    return keep, weight


def _left_singular(
    a: torch.Tensor, floor: float, sketch: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left singular vectors and values of a wide matrix of small numerical rank.

    A fixed-seed range finder (Halko, Martinsson & Tropp 2011): the SVD of the sketch
    Q^T a, Q an orthonormal basis of a G, with the sketch widened until its smallest
    singular value is at most `floor` x the largest (every direction above the floor
    caught); deterministic.
    """
    g = torch.Generator(device="cpu").manual_seed(0)
    while sketch < min(a.shape):
        omega = torch.randn(a.shape[1], sketch, generator=g, dtype=a.dtype).to(a.device)
        basis, _ = torch.linalg.qr(a @ omega)
        u, s, _ = torch.linalg.svd(basis.T @ a, full_matrices=False)
        if s[-1] <= floor * s[0]:
            return basis @ u, s
        sketch *= 2
    u, s, _ = torch.linalg.svd(a, full_matrices=False)
    return u, s


class RealBabinet(torch.nn.Module):
    """T for real maps (B, L, C, N, N): L wavelengths, C maps each (e.g. real, imaginary),
    on the grids of `DotGrid`."""

    def __init__(self, grid: DotGrid, dtype: torch.dtype) -> None:
        super().__init__()
        x, u, ratio, weights = grid
        keep, fold = _half_grid_weights(u)
        arg = 2 * np.pi * ratio[:, None, None] * u[None, keep, None] * x[None, None, :]
        v = np.concatenate((np.cos(arg), np.sin(arg)), axis=1)  # (L, 2 M', N)
        self.register_buffer("v", torch.as_tensor(v[:, None], dtype=dtype))  # (L, 1, 2M', N)
        self.register_buffer("v_t", self.v.transpose(-1, -2).contiguous())  # (L, 1, N, 2M')
        self.register_buffer("keep", torch.as_tensor(keep))
        self.register_buffer("fold", torch.as_tensor(fold[:, None] * fold[None, :]))
        self.register_buffer("kernel", self.fold_kernel(torch.as_tensor(weights)).to(dtype))

    def fold_kernel(self, weights: torch.Tensor) -> torch.Tensor:
        """The kernel K (L, 1, 2M', 2M') of weights (L, M, M) on the whole focal box (the
        footprint times the MFT normalisation): the samples u >= 0 with their fold weights,
        the same on the four parity blocks. Differentiable in `weights`."""
        w = weights[:, self.keep][:, :, self.keep] * self.fold.to(weights.dtype)  # (L, M', M')
        row = torch.cat((w, w), dim=-1)
        return torch.cat((row, row), dim=-2)[:, None]

    def forward(
        self,
        maps: torch.Tensor,
        mix: torch.Tensor | None = None,
        kernel: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """T applied to real maps (B, L, C, N, N) -> (B, L, C, N, N).

        mix (L, C, C), optional: output channel c is sum_d mix[l, c, d] T(maps[:, l, d]),
        applied in the small focal domain where it is cheap. kernel: another dot's
        (`fold_kernel`), e.g. a calibrated diameter's; None: this operator's own.
        """
        b, n_l, c, n, _ = maps.shape
        m = self.v.shape[-2]
        y = maps.reshape(b, n_l, c * n, n) @ self.v_t[:, 0]  # (B, L, C*N, N) -> (B, L, C*N, 2M')
        focal = self.v @ y.reshape(b, n_l, c, n, m)  # -> (B, L, C, 2M', 2M'): parity blocks
        focal = (self.kernel if kernel is None else kernel) * focal
        if mix is not None:  # one mix (L, C, C), or one per sample (B, L, C, C)
            pattern = "lcd,bldij->blcij" if mix.dim() == 3 else "blcd,bldij->blcij"
            focal = torch.einsum(pattern, mix, focal)
        z = (focal.reshape(b, n_l, c * m, m) @ self.v[:, 0]).reshape(b, n_l, c, m, n)
        return self.v_t @ z  # -> (B, L, C, N, N)

    @torch.no_grad()
    def low_rank(
        self, support: torch.Tensor, rtol: float, kernel: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """T between `support` and the whole grid as a sum of r separable terms.

        T is symmetric, positive semi-definite (T = Q^T Q, Q = sqrt(K) (V x V)) and of
        tiny numerical rank: the dot spans about one lambda/D, so a pupil-supported
        field reaches it through ~20 significant terms (the Slepian concentration
        problem), against the 2M' = 36 focal rows the separable form pays for per axis.
        With the SVD of T restricted to maps supported on `support`:

            T(x)           ~ sum_k out_k <inp_k, x>   for x zero off `support`,
            T(y) * support ~ sum_k inp_k <out_k, y>   for any y (T symmetric),

        keeping the singular values above `rtol` x the largest (the relative error of
        both, in operator norm). Built in float64 from the separable factors.

        Args:
            support: (N, N) bool, the pixels the inputs (or the kept outputs) live on.
            rtol: relative truncation of the singular values.
            kernel: another dot's kernel (`fold_kernel`); None: this operator's own.

        Returns:
            out, inp: (L, r, N, N) in this operator's dtype (inp zero off `support`;
            wavelengths of lower rank padded with zero terms).
        """
        f64 = torch.float64
        n = support.shape[-1]
        idx = torch.nonzero(support.flatten().to(self.v.device)).flatten()
        rows, cols = idx // n, idx % n
        outs, inps = [], []
        kernels = (self.kernel if kernel is None else kernel)[:, 0].to(f64)
        for v, k in zip(self.v[:, 0].to(f64), kernels, strict=True):
            p, q = torch.nonzero(k > 0, as_tuple=True)
            sqrt_k = k[p, q].sqrt()
            q_sup = sqrt_k[:, None] * v[p][:, rows] * v[q][:, cols]  # Q on the support
            # Q's directions down to 1e-3 rtol: T = Q^T Q then errs by well under rtol
            floor = max(1e-3 * rtol, 1e-15)
            u, s = _left_singular(q_sup, floor)
            keep = s > floor * s[0]
            u, s = u[:, keep], s[keep]
            focal = torch.zeros(u.shape[1], *k.shape, dtype=f64, device=k.device)
            focal[:, p, q] = (u * sqrt_k[:, None]).T
            y = (v.T @ focal @ v).flatten(1).T  # Q^T U on the whole grid (N^2, r0)
            # T restricted = (Q^T U S) (Q_sup^T U S^-1)^T; its own SVD orders the terms
            left, sig, right_t = torch.linalg.svd(y * s, full_matrices=False)
            r = int((sig > rtol * sig[0]).sum())
            outs.append((left[:, :r] * sig[:r]).T)
            inps.append(((y[idx] / s) @ right_t[:r].T).T)
        r_max = max(o.shape[0] for o in outs)
        out = torch.zeros(len(outs), r_max, n * n, dtype=f64, device=self.v.device)
        inp = torch.zeros_like(out)
        for i, (o, w) in enumerate(zip(outs, inps, strict=True)):
            out[i, : o.shape[0]] = o
            inp[i, : w.shape[0], idx] = w
        shape = (len(outs), r_max, n, n)
        return out.reshape(shape).to(self.v.dtype), inp.reshape(shape).to(self.v.dtype)

    @torch.no_grad()
    def low_rank_gram(
        self,
        support: torch.Tensor,
        rtol: float,
        kernel: torch.Tensor | None = None,
        dropped: list[float] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`low_rank` for rtol >= 1e-7 (the float32 engine's), from small Gram matrices.

        T restricted to `support` is Q^T Q_sup, Q = sqrt(K) (V x V) over the focal samples
        where the dot is (K > 0). For a support even in both axes the Gram matrices of
        the focal samples, G_sup = Q_sup Q_sup^T and G = Q Q^T, split into the four parity
        blocks of V = [C; S] (cos-cos, cos-sin, sin-cos, sin-sin), each the size of the
        dot's footprint in one quadrant: G_sup from H = W_a S W_b^T, W_a[(i, j), x] =
        V_a[i, x] V_a[j, x] (two small products), G from V_a V_a^T and V_b V_b^T. With
        G_sup = U diag(lambda) U^T (eigenvalues above 1e-15 of the largest: the rest
        carry below sqrt(1e-15) ~ 3e-8 of T), T = (Q^T Z) (Q_sup^T U lambda^-1/2)^T,
        Z = U lambda^1/2, and the eigh of Z^T G Z (R, sigma^2) gives `low_rank`'s SVD
        terms: out = Q^T Z R, inp = Q_sup^T U lambda^-1/2 R, sigma above rtol x the
        largest. Only the r kept terms become maps. Gram matrices square the singular
        values: accurate to ~sqrt(eps64) = 1.5e-8 of the largest term, hence rtol >= 1e-7.
        A support not even in both axes: `low_rank`. 10-20x faster than `low_rank`.

        Args:
            dropped: a list that receives, per wavelength, the first singular value left
                out over the largest (the truncation's relative error in operator norm).

        Returns:
            out, inp: as `low_rank`, (L, r, N, N) in this operator's dtype.
        """
        if rtol < 1e-7:
            raise ValueError(f"low_rank_gram needs rtol >= 1e-7, got {rtol}: use low_rank")
        f64 = torch.float64
        sup = support.to(device=self.v.device, dtype=f64)
        if not (torch.equal(sup, sup.flip(0)) and torch.equal(sup, sup.flip(1))):
            return self.low_rank(support, rtol, kernel)
        n, m2 = sup.shape[-1], self.v.shape[-2]
        half = m2 // 2
        kernels = (self.kernel if kernel is None else kernel)[:, 0].to(f64)
        outs, inps = [], []
        for v, k in zip(self.v[:, 0].to(f64), kernels, strict=True):
            parts = (v[:half], v[half:])  # the C and S rows (M', N)
            w = [(p[:, None] * p[None]).reshape(half * half, n) for p in parts]
            gram = [p @ p.T for p in parts]  # sum over the whole grid, per axis
            blocks = []
            for a in (0, 1):
                for b in (0, 1):
                    kb = k[a * half : (a + 1) * half, b * half : (b + 1) * half]
                    p, q = torch.nonzero(kb > 0, as_tuple=True)
                    if len(p):
                        sqrt_k = kb[p, q].sqrt()
                        h = (w[a] @ sup @ w[b].T).reshape(half, half, half, half)
                        g_sup = h[p[:, None], p[None], q[:, None], q[None]]
                        g_sup = g_sup * sqrt_k[:, None] * sqrt_k
                        g = gram[a][p[:, None], p[None]] * gram[b][q[:, None], q[None]]
                        g = g * sqrt_k[:, None] * sqrt_k
                        blocks.append(
                            (a * half + p, b * half + q, sqrt_k, g, *torch.linalg.eigh(g_sup))
                        )
            lam_max = max(float(blk[4].max()) for blk in blocks)
            terms = []  # (sigma, focal coefficients of out, of inp) per block
            for rows, cols, sqrt_k, g, lam, u in blocks:
                keep = lam > 1e-15 * lam_max
                if not keep.any():
                    continue
                lam, u = lam[keep], u[:, keep]
                z = u * lam.sqrt()
                sig2, r_vec = torch.linalg.eigh(z.T @ g @ z)
                c_out, c_in = z @ r_vec, (u / lam.sqrt()) @ r_vec
                for i in range(len(sig2)):
                    sig = float(sig2[i].clamp_min(0).sqrt())
                    terms.append((sig, rows, cols, sqrt_k * c_out[:, i], sqrt_k * c_in[:, i]))
            terms.sort(key=lambda t: -t[0])
            r = sum(t[0] > rtol * terms[0][0] for t in terms)
            if dropped is not None:
                dropped.append(terms[r][0] / terms[0][0] if r < len(terms) else 0.0)
            terms = terms[:r]
            f = torch.zeros(2, len(terms), m2, m2, dtype=f64, device=v.device)
            for i, (_, rows, cols, c_out, c_in) in enumerate(terms):
                f[0, i, rows, cols] = c_out
                f[1, i, rows, cols] = c_in
            maps = v.T @ f @ v  # Q^T (focal vectors): (2, r, N, N)
            outs.append(maps[0])
            inps.append(maps[1] * sup)
        r_max = max(o.shape[0] for o in outs)
        out = torch.zeros(len(outs), r_max, n, n, dtype=f64, device=self.v.device)
        inp = torch.zeros_like(out)
        for i, (o, w_) in enumerate(zip(outs, inps, strict=True)):
            out[i, : o.shape[0]] = o
            inp[i, : w_.shape[0]] = w_
        return out.to(self.v.dtype), inp.to(self.v.dtype)


class MatrixBabinet(torch.nn.Module):
    """T by complex matrix products over the whole focal box: the plain form of `RealBabinet`."""

    def __init__(self, grid: DotGrid, dtype: torch.dtype) -> None:
        super().__init__()
        x, u, ratio, weights = grid
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        mft = np.exp(-2j * np.pi * ratio[:, None, None] * u[None, :, None] * x[None, None, :])
        self.register_buffer("mft", torch.as_tensor(mft[:, None], dtype=cdtype))  # (L, 1, M, N)
        self.register_buffer("kernel", torch.as_tensor(weights[:, None], dtype=cdtype))

    def forward(self, maps: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
        """T applied to real maps (B, L, C, N, N) -> (B, L, C, N, N); mix as `RealBabinet`."""
        z = maps.to(self.mft.dtype)
        focal = self.mft @ z @ self.mft.transpose(-1, -2)  # (B, L, C, N, N) -> (B, L, C, M, M)
        back = (self.mft.mH @ (self.kernel * focal) @ self.mft.conj()).real  # -> (..., N, N)
        if mix is not None:
            back = torch.einsum("lcd,bldij->blcij", mix, back)
        return back  # T is real on a symmetric grid
