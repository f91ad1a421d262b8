"""`torch.compile` with an eager fallback that keeps its reason, and no global settings.

torch's own fallback (``torch._dynamo.config.suppress_errors``) is process-wide and says
nothing afterwards; when a compiled function is recompiled more than
``recompile_limit`` times, dynamo runs it eagerly with one log line. Here both become a
`fallback_reason`, scoped to this wrapper's own calls, and `status()` says what ran: the
graphs compiled, or why it runs eagerly.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["CompiledModule", "compile_status"]


def _graph_count() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class CompiledModule:
    """``module(*args)`` through `torch.compile`, or eagerly once compiling has failed.

    Args:
        module: the network (its parameters and state_dict stay its own).
        mode: torch.compile mode (None: default; "reduce-overhead": CUDA graphs).
        dynamic: torch.compile's dynamic (None: a second input size compiles once more
            with a dynamic batch dimension instead of once per size).
        backend: torch.compile backend ("inductor"; tests pass one that fails).
        recompile_limit: graphs per code object before dynamo gives up. One code object
            (`ReconModel.forward`) serves every network of a process, and each takes 2-4
            graphs (training, evaluation, a dynamic batch size): dynamo's default of 8 is
            two networks (a benchmark of phenn and gru hit it).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        mode: str | None = None,
        dynamic: bool | None = None,
        backend: str | Callable[..., Any] = "inductor",
        recompile_limit: int = 64,
    ) -> None:
        self.module = module
        self.mode = mode
        self.recompile_limit = recompile_limit
        self._compiled = torch.compile(module, mode=mode, dynamic=dynamic, backend=backend)
        self.graphs = 0
        self.fallback_reason: str | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fallback_reason is None:
            before = _graph_count()
            try:
                with _strict_recompiles(self.recompile_limit):
                    out = self._compiled(*args, **kwargs)
            except Exception as err:  # compiling failed: eager from now on, reason kept
                self.fallback_reason = _one_line(err)
                warnings.warn(
                    f"torch.compile failed, running eagerly: {self.fallback_reason}",
                    RuntimeWarning,
                    stacklevel=2,
                )
            else:
                self.graphs += _graph_count() - before
                return out
        return self.module(*args, **kwargs)

    @property
    def compiled(self) -> bool:
        """Whether the calls so far ran compiled graphs."""
        return self.fallback_reason is None and self.graphs > 0

    def status(self) -> dict[str, Any]:
        """What ran: {"requested", "compiled", "graphs", "mode", "fallback"}."""
        return {
            "requested": True,
            "compiled": self.compiled,
            "graphs": self.graphs,
            "mode": self.mode or "default",
            "fallback": self.fallback_reason,
        }


def compile_status(run: object) -> dict[str, Any]:
    """`CompiledModule.status()` of `run`, or "not requested" for a plain module."""
    if isinstance(run, CompiledModule):
        return run.status()
    return {"requested": False, "compiled": False, "graphs": 0, "mode": None, "fallback": None}


def _strict_recompiles(limit: int) -> contextlib.AbstractContextManager:
    """Inside the block: dynamo's recompile limit is `limit`, and reaching it raises
    instead of a silent eager run."""
    import torch._dynamo

    config = torch._dynamo.config
    settings: dict[str, Any] = {}
    for names, value in (
        (("recompile_limit", "cache_size_limit"), limit),  # the new name, then the old
        (("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit"), True),
    ):
        name = next((n for n in names if hasattr(config, n)), None)
        if name is not None:
            settings[name] = value
    return config.patch(**settings) if settings else contextlib.nullcontext()


def _one_line(err: BaseException) -> str:
    """ "Outer (Root: first line of the root cause)": dynamo wraps a backend's error."""
    root = err
    while root.__cause__ is not None or getattr(root, "inner_exception", None) is not None:
        root = root.__cause__ or root.inner_exception  # type: ignore[attr-defined]
    lines = [line.strip() for line in str(root).splitlines() if line.strip()]
    text = f"{type(root).__name__}: {(lines or [''])[0][:200]}"
    return text if root is err else f"{type(err).__name__} ({text})"
