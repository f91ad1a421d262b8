"""One batched damped Gauss-Newton (Levenberg-Marquardt) solver, for every fit.

Modal refinement, zonal refinement and calibration differ in their unknowns and in how
they solve a damped Gauss-Newton step (normal equations, conjugate gradients, a dense
joint system); they share the rest, which lives here: per sample, a damping raised until
the cost falls (at most `Damping.tries` times), lowered after each accepted step, and a
stopping rule that says why each sample stopped (`STATUSES`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

__all__ = [
    "CONVERGED",
    "ITERATION_LIMIT",
    "MODEL_MISMATCH",
    "POOR_FIT",
    "STALLED",
    "STATUSES",
    "Damping",
    "Problem",
    "Solution",
    "levenberg_marquardt",
]

CONVERGED = "converged"
"""The last accepted step was below the step tolerance, or no damping lowered the cost
(a minimum to rounding), or the cost fell by less than the noise can tell (`noise_floor`)."""
STALLED = "stalled"
"""The cost fell by less than `stall_tol` of itself while the step was still large."""
ITERATION_LIMIT = "iteration limit"
"""Still moving after `max_iter` iterations."""
POOR_FIT = "poor fit"
"""Stopped, but the misfit is too high for the noise (`recon.refine.noise.good_fit`):
a local minimum, or frames the model cannot reproduce. Assigned by the fits' reports."""
MODEL_MISMATCH = "model mismatch"
"""A poor fit that another start brought back to the same minimum: the model cannot
reproduce the frames (aberrations outside the modes, a wrong system), so restarting
will not help; assigned by `RefinedEstimator`."""
STATUSES = (CONVERGED, STALLED, ITERATION_LIMIT, POOR_FIT, MODEL_MISMATCH)


@dataclass(frozen=True)
class Damping:
    """Settings of `levenberg_marquardt`.

    Attributes:
        max_iter: Gauss-Newton steps at most per sample.
        step_tol: converged when an accepted step's size (`Problem.step_size`) is below.
        stall_tol: stop a sample whose cost fell by less than this share of itself in
            an iteration (0: never).
        noise_floor: a stall whose cost fell by at most this much is converged (the
            deviance's unit: 1 is the change a 1-sigma move makes; 0 without noise).
        initial: first damping; down, up: its factors after an accepted / a rejected
            step; floor: its smallest value; tries: rejected steps before giving up.
    """

    max_iter: int
    step_tol: float
    stall_tol: float = 1e-4
    noise_floor: float = 0.0
    initial: float = 1e-3
    down: float = 3.0
    up: float = 8.0
    floor: float = 1e-9
    tries: int = 8


class Problem(Protocol):
    """A batch of independent fits (calibration: a batch of one)."""

    def evaluate(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """Cost (b,) float64 at unknowns x (b, ...) of samples `idx`, and the state of the
        model there (tensors with a leading batch dimension) that `gauss_newton` uses."""
        ...

    def gauss_newton(self, x: torch.Tensor, state: tuple, idx: torch.Tensor) -> Any:
        """The Gauss-Newton system at x (whatever `step` needs to solve it, damped)."""
        ...

    def step(self, system: Any, damping: torch.Tensor, sub: torch.Tensor) -> torch.Tensor:
        """The damped step (b_sub, ...) of rows `sub` of `system` for `damping` (b_sub,)."""
        ...

    def step_size(self, step: torch.Tensor) -> torch.Tensor:
        """The size (b,) of steps, in the unit of `Damping.step_tol` (e.g. nm RMS)."""
        ...


class TimedProblem:
    """A `Problem` that adds to `timings` the seconds of each of its parts: "residual"
    (`evaluate`: the forward model and the cost), "jacobian" (`gauss_newton`: the
    Jacobian and the normal equations), "solve" (`step`); and "evaluations", the samples
    whose cost it evaluated (synchronised on a GPU)."""

    def __init__(self, problem: Problem, timings: dict[str, float], device: torch.device):
        self.problem, self.timings, self.device = problem, timings, device
        for key in ("residual", "jacobian", "solve", "evaluations"):
            timings.setdefault(key, 0.0)

    def _timed(self, key: str, fn: Any, *args: Any) -> Any:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        out = fn(*args)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings[key] += time.perf_counter() - t0
        return out

    def evaluate(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        self.timings["evaluations"] += x.shape[0]
        return self._timed("residual", self.problem.evaluate, x, idx)

    def gauss_newton(self, x: torch.Tensor, state: tuple, idx: torch.Tensor) -> Any:
        return self._timed("jacobian", self.problem.gauss_newton, x, state, idx)

    def step(self, system: Any, damping: torch.Tensor, sub: torch.Tensor) -> torch.Tensor:
        return self._timed("solve", self.problem.step, system, damping, sub)

    def step_size(self, step: torch.Tensor) -> torch.Tensor:
        return self.problem.step_size(step)


@dataclass
class Solution:
    """x (B, ...) and cost (B,) at the end, the final state, iterations (B,) (Gauss-Newton
    systems built) and status (B,) (one of `STATUSES` but `POOR_FIT`)."""

    x: torch.Tensor
    cost: torch.Tensor
    state: tuple
    iterations: np.ndarray
    status: np.ndarray


def levenberg_marquardt(problem: Problem, x0: torch.Tensor, damping: Damping) -> Solution:
    """Minimise each sample's cost from x0 (B, ...) by damped Gauss-Newton steps."""
    x = x0.clone()
    b = x.shape[0]
    dev = x.device
    cost, state = problem.evaluate(x, torch.arange(b, device=dev))
    state = tuple(s.clone() for s in state)
    lam = torch.full((b,), damping.initial, dtype=torch.float64, device=dev)
    iterations = np.zeros(b, dtype=np.int64)
    status = np.full(b, ITERATION_LIMIT, dtype=object)
    active = torch.ones(b, dtype=torch.bool, device=dev)
    for _ in range(damping.max_iter):
        idx = torch.nonzero(active).flatten()
        if idx.numel() == 0:
            break
        iterations[idx.cpu().numpy()] += 1
        before = cost[idx].clone()
        system = problem.gauss_newton(x[idx], tuple(s[idx] for s in state), idx)
        accepted = torch.zeros(idx.numel(), dtype=torch.bool, device=dev)
        taken = torch.zeros_like(x[idx])
        for _try in range(damping.tries):  # raise the damping until the cost falls
            sub = torch.nonzero(~accepted).flatten()
            if sub.numel() == 0:
                break
            step = problem.step(system, lam[idx[sub]], sub)
            new_cost, new_state = problem.evaluate(x[idx[sub]] + step, idx[sub])
            ok = new_cost <= cost[idx[sub]]
            good, where = sub[ok], idx[sub[ok]]
            taken[good] = step[ok]
            cost[where] = new_cost[ok]
            for kept, new in zip(state, new_state, strict=True):
                kept[where] = new[ok]
            accepted[good] = True
            lam[where] = (lam[where] / damping.down).clamp(min=damping.floor)
            lam[idx[sub[~ok]]] *= damping.up
        x[idx] = x[idx] + taken
        small = problem.step_size(taken) < damping.step_tol  # no accepted step: 0, small
        slow = ~small & (cost[idx] > (1 - damping.stall_tol) * before)
        at_noise = slow & (before - cost[idx] <= damping.noise_floor)
        converged, stalled = (small | at_noise).cpu().numpy(), (slow & ~at_noise).cpu().numpy()
        done = idx.cpu().numpy()
        status[done[converged]] = CONVERGED
        status[done[stalled]] = STALLED
        active[idx[torch.as_tensor(converged | stalled, device=dev)]] = False
    return Solution(x, cost, state, iterations, status)
