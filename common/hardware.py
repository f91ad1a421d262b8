"""One place decides the hardware configuration: a device's precision, optimizer, compile,
memory format, data placement, CUDA graphs, host syncs and refinement precision.

    plan = hardware_plan("auto")               # the machine's own answer
    plan = hardware_plan("cuda", bf16=True)    # the answer for an H100, built anywhere

Code below the plan asks the plan, never ``is_cuda``. A CUDA plan runs on the CPU where
torch allows (fused AdamW, bf16 and fp16 autocast, channels_last and torch.compile all do):
that is how CI, which has no GPU, runs the GPU configuration (tests/test_gpu_config.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = [
    "PRECISIONS",
    "HardwarePlan",
    "device_type",
    "float32_matmul",
    "hardware_plan",
]

PRECISIONS = ("auto", "32", "32-true", "bf16-mixed", "16-mixed")
"""Training precisions (Lightning's names); auto: the plan's choice for the device."""

FUSED_ADAMW_ON_CPU = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)
"""torch >= 2.4 has a fused AdamW for CPU tensors (7x the default's speed on the step of
the 0.56 M-parameter PhENN, measured on 2 cores)."""


@dataclass(frozen=True)
class HardwarePlan:
    """What runs where, decided once for one kind of device.

    Attributes:
        device: the device type the plan is for: "cuda", "cpu" or "mps".
        precision: Lightning training precision: "bf16-mixed", "16-mixed" or "32".
        fused_adamw: AdamW as one fused kernel (gradient clipping works with it in every
            precision: `recon.train.module.LitRecon.configure_gradient_clipping`).
        compile: torch.compile the network in training (eager fallback, reason kept).
        cuda_graphs: inference compiled with CUDA graphs (mode "reduce-overhead").
        channels_last: NHWC memory format for the convolutional networks.
        device_share: largest share of the device's free memory a training set may take.
        host_placement: where a training set goes that does not fit: "pinned" host memory
            (copied to the device batch by batch) or "loader" (DataLoader workers).
        pin_memory: page-locked host buffers for host-to-device copies.
        sync_every: training steps between host syncs (the NaN check, the progress bar).
        refine_dtype: "float32" or "float64": fields and Jacobians of refinement fits.
        refine_matmul: float32 matrix-product precision inside fits ("highest": no TF32).
        refine_chunk: samples per Jacobian product in a modal fit (0: the whole batch). A
            CPU's caches hold one sample's (~7 MB at 64 px) and not 32 (~220 MB): one at a
            time is 2-3x faster there; a GPU wants the whole batch.
    """

    device: str
    precision: str
    fused_adamw: bool
    compile: bool
    cuda_graphs: bool
    channels_last: bool
    device_share: float
    host_placement: str
    pin_memory: bool
    sync_every: int
    refine_dtype: str = "float32"
    refine_matmul: str = "highest"
    refine_chunk: int = 0

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype of the precision (None: full float32)."""
        return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(self.precision)

    @property
    def optimizer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `torch.optim.AdamW` for this plan."""
        return {"fused": True} if self.fused_adamw else {}

    @property
    def refine_torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.refine_dtype == "float64" else torch.float32

    def autocast(self, device: torch.device | str) -> contextlib.AbstractContextManager:
        """Autocast of the plan's precision on `device` (a no-op in float32)."""
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=dtype)

    def placement(self, requested: str, nbytes: int, free_bytes: int) -> str:
        """ "device", "pinned" or "loader" for a training set of `nbytes`.

        `requested` "auto": the device when the set fits in `device_share` of its
        `free_bytes`, else `host_placement`; any other value is taken as it is.
        """
        if requested != "auto":
            return requested
        return "device" if nbytes <= self.device_share * free_bytes else self.host_placement

    def describe(self) -> dict[str, Any]:
        """The plan as JSON-able data (run folders and benchmarks record it)."""
        return asdict(self)


def device_type(device: str | torch.device) -> str:
    """ "cuda", "cpu" or "mps" of a torch device or a Lightning accelerator name.

    "auto" is CUDA when torch sees a GPU, else the CPU; "gpu" is CUDA.
    """
    name = str(device).split(":")[0]
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "gpu":
        return "cuda"
    if name not in ("cuda", "cpu", "mps"):
        raise ValueError(f"{{device}} must be auto, cpu, cuda, gpu or mps, got {device!r}")
    return name


def hardware_plan(
    device: str | torch.device = "auto",
    *,
    precision: str = "auto",
    compile: bool | None = None,
    bf16: bool | None = None,
) -> HardwarePlan:
    """The plan for `device` ("auto", "cpu", "cuda", "gpu", "mps" or a torch device).

    Args:
        precision: a training precision of `PRECISIONS`; auto: bf16-mixed on a GPU with
            bf16 (Ampere and newer), 16-mixed on an older GPU, 32 elsewhere.
        compile: torch.compile in training and CUDA graphs in inference; None: on for CUDA.
        bf16: whether the GPU computes in bf16; None: ask torch (True when no GPU is
            present: the plan is then for a GPU that is not here, as in CI).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"{{precision}} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    kind = device_type(device)
    if kind == "cuda":
        if bf16 is None:
            bf16 = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else True
        auto = "bf16-mixed" if bf16 else "16-mixed"
        use_compile = True if compile is None else compile
        return HardwarePlan(
            device="cuda", precision=_resolved(precision, auto), fused_adamw=True,
            compile=use_compile, cuda_graphs=use_compile, channels_last=True,
            device_share=0.4, host_placement="pinned", pin_memory=True, sync_every=10,
        )  # fmt: skip
    return HardwarePlan(
        device=kind, precision=_resolved(precision, "32"), fused_adamw=FUSED_ADAMW_ON_CPU,
        compile=bool(compile), cuda_graphs=False, channels_last=False, device_share=0.25,
        host_placement="loader", pin_memory=False, sync_every=1, refine_chunk=1,
    )  # fmt: skip


def _resolved(precision: str, auto: str) -> str:
    if precision == "auto":
        return auto
    return "32" if precision == "32-true" else precision


@contextlib.contextmanager
def float32_matmul(precision: str) -> Iterator[None]:
    """Float32 matrix products at `precision` ("highest", "high" = TF32, "medium") inside
    the block, and the caller's setting again after it.

    torch keeps this setting per process and offers no per-call form; fits enter it for
    their own duration only (a TF32 product's 1e-3 relative error would move a fit's
    fixed point), so a caller that allowed TF32 for training keeps it outside the fit.
    """
    old = torch.get_float32_matmul_precision()
    if old == precision:
        yield
        return
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)
