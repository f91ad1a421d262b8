"""The GPU configuration, run on the CPU: every setting the CUDA plan picks goes through the
real `recon train` path (Lightning), because CI has no GPU to catch a crash.

On main before the hardware plan, `recon train` on any GPU built a fused AdamW, trained in
bf16-mixed and clipped gradients: Lightning refused at step 1 ("does not allow for
gradient clipping because it performs unscaling of gradients internally").
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch._dynamo
from data_helpers import make_dataset

from common.compiled import CompiledModule
from common.hardware import HardwarePlan, hardware_plan
from recon.train import LitRecon, NonFiniteLossError, load_train_config, train

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}
CUDA = hardware_plan("cuda", bf16=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gpu_config")
    make_dataset(folder / "train.h5", n_samples=32)
    make_dataset(folder / "val.h5", n_samples=8)
    return folder


def _config(folder: Path, **overrides: object):
    base = {
        "data.train": str(folder / "train.h5"),
        "data.val": str(folder / "val.h5"),
        "out_dir": str(folder / "runs"),
        "batch_size": 8,
        "epochs": 1,
        "accelerator": "cpu",  # the CUDA plan, run on the CPU
    }
    return load_train_config("quick").with_overrides(**{**base, **overrides})


class _Capture(pl.Callback):
    """The optimizer, the parameters' layout and the losses of the steps that ran."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self.channels_last = False
        self.scaler: torch.amp.GradScaler | None = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        self.optimizer = trainer.optimizers[0]
        self.scaler = getattr(trainer.precision_plugin, "scaler", None)
        conv = next(p for p in module.model.parameters() if p.ndim == 4)
        self.channels_last = conv.is_contiguous(memory_format=torch.channels_last)


def test_the_cuda_plan_is_what_a_gpu_user_gets() -> None:
    assert CUDA.precision == "bf16-mixed" and CUDA.fused_adamw and CUDA.compile
    assert CUDA.channels_last and CUDA.cuda_graphs and CUDA.host_placement == "pinned"
    assert CUDA.sync_every > 1 and CUDA.refine_dtype == "float32"
    assert hardware_plan("cuda", bf16=False).precision == "16-mixed"  # V100, T4
    assert hardware_plan("cuda", precision="32", compile=False).compile is False
    cpu = hardware_plan("cpu")
    assert cpu.precision == "32" and not cpu.compile and not cpu.channels_last
    # the training config asks the same function
    cfg = load_train_config("quick").with_overrides(accelerator="gpu", precision="auto")
    assert cfg.hardware().device == "cuda" and cfg.hardware().fused_adamw


def test_cuda_plan_trains_through_lightning_with_compile(tiny: Path) -> None:
    """bf16-mixed, fused AdamW, gradient clipping, channels_last and torch.compile: the
    defaults of `recon train` on a GPU, through the real `train`, on the CPU."""
    cap = _Capture()
    cfg = _config(tiny, epochs=2)
    assert cfg.optim.grad_clip == 1.0
    run_dir = train(cfg, callbacks=[cap], hardware=CUDA, **QUIET)
    assert len(cap.losses) == 8 and all(torch.isfinite(torch.tensor(cap.losses)))
    assert cap.optimizer is not None and cap.optimizer.defaults["fused"] is True
    assert cap.channels_last
    record = json.loads((run_dir / "hardware.json").read_text())
    assert record["precision"] == "bf16-mixed"
    status = record["compile_status"]
    assert status["compiled"] is True and status["graphs"] >= 1, status
    assert status["fallback"] is None
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "32"])
def test_fused_adamw_clips_in_every_precision(tiny: Path, precision: str) -> None:
    cap = _Capture()
    plan = hardware_plan("cuda", precision=precision, compile=False)
    train(_config(tiny), callbacks=[cap], hardware=plan, **QUIET)
    assert len(cap.losses) == 4 and cap.optimizer.defaults["fused"] is True
    assert (cap.scaler is not None) == (precision == "16-mixed")  # fp16 scales, on the CPU too


class _Probe(LitRecon):
    """The gradient norm after clipping, as the optimizer's step will see it."""

    seen_norm: float = 0.0

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        _Probe.seen_norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))


def _one_step(tiny: Path, plan: HardwarePlan) -> list[torch.Tensor]:
    """The parameters after one `recon train` step (clip at 1e-3) under `plan`."""
    from recon.models import NormStats, build_model
    from recon.train.data import ZWFSDataModule, load_data
    from recon.train.trainer import build_trainer

    cfg = _config(tiny, **{"optim.grad_clip": 1e-3, "optim.schedule": "none"})
    data = load_data(cfg)
    torch.manual_seed(0)
    model = build_model("phenn", cfg.kwargs, 2, NormStats((1.0, 1.0), (0.3, 0.3), 100.0, 1))
    lit = _Probe(cfg, model, data.source.pupil, {}, plan)
    trainer = build_trainer(cfg, tiny / "probe", plan=plan, max_steps=1, **QUIET)
    trainer.fit(lit, datamodule=ZWFSDataModule(data, 8, 0, 0, "device"))
    return [p.detach().clone() for p in model.parameters()]


def test_fused_update_under_fp16_scaling_equals_the_unfused_one(tiny: Path) -> None:
    """16-mixed scales the loss by 65536: the fused step must clip the *unscaled* gradient
    and not unscale it twice, i.e. take the same step as Lightning's own unfused path."""
    plan = hardware_plan("cuda", precision="16-mixed", compile=False)
    fused = _one_step(tiny, plan)
    assert _Probe.seen_norm == pytest.approx(1e-3, rel=1e-3)  # clipped, and unscaled
    unfused = _one_step(tiny, HardwarePlan(**{**plan.describe(), "fused_adamw": False}))
    assert _Probe.seen_norm == pytest.approx(1e-3, rel=1e-3)
    for a, b in zip(fused, unfused, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_compile_failure_falls_back_to_eager_and_says_why() -> None:
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no C compiler on this node")

    net = torch.nn.Conv2d(1, 1, 3)
    run = CompiledModule(net, backend=broken_backend)
    x = torch.rand(2, 1, 8, 8)
    with pytest.warns(RuntimeWarning, match="running eagerly"):
        out = run(x)
    torch.testing.assert_close(out, net(x))
    status = run.status()
    assert status["compiled"] is False and "no C compiler" in status["fallback"]
    # the fallback is scoped: dynamo's global suppress_errors is left as it was
    assert torch._dynamo.config.suppress_errors is False


def test_recompile_limit_is_reported_not_silent() -> None:
    """Past dynamo's recompile limit a compiled function runs eagerly; here that is a
    fallback with its reason, not a silent slowdown."""
    net = torch.nn.Linear(4, 4)
    run = CompiledModule(net, dynamic=False, backend="eager", recompile_limit=2)
    with pytest.warns(RuntimeWarning, match="recompile limit"):
        for n in range(1, 5):  # a new static shape each call: one recompile each
            run(torch.rand(n, 4))
    assert torch._dynamo.config.recompile_limit == 8  # the process's own limit, untouched
    assert run.status()["fallback"] is not None and not run.compiled


def test_nan_found_without_a_sync_per_step(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA plan checks the loss on the host every `sync_every` steps only, and still
    stops before a non-finite step reaches a checkpoint."""
    real = LitRecon.loss_terms
    syncs: list[int] = []

    def poisoned(self: LitRecon, batch: tuple) -> dict:
        terms = real(self, batch)
        if self.training and self.global_step == 4:  # the first step of epoch 1
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    real_check = LitRecon._check_finite

    def counted(self: LitRecon) -> None:
        syncs.append(self.global_step)
        real_check(self)

    monkeypatch.setattr(LitRecon, "loss_terms", poisoned)
    monkeypatch.setattr(LitRecon, "_check_finite", counted)
    plan = HardwarePlan(**{**CUDA.describe(), "compile": False, "sync_every": 3})
    cfg = _config(tiny, epochs=3, out_dir=str(tiny / "nan_runs"))
    with pytest.raises(NonFiniteLossError, match=r"from step 4 .*last\.ckpt"):
        train(cfg, hardware=plan, **QUIET)
    assert len(syncs) < 6  # 6 steps ran: no check per step
    (run_dir,) = (tiny / "nan_runs").iterdir()
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4


@pytest.mark.device
def test_training_steps_on_the_test_device(tiny: Path, device: str) -> None:
    """`recon train` on ZWFS_TEST_DEVICE under that device's own plan (on a GPU: bf16,
    fused AdamW with clipping, channels_last, compiled)."""
    kind = torch.device(device).type
    plan = hardware_plan(kind)
    cap = _Capture()
    cfg = _config(tiny, accelerator="gpu" if kind == "cuda" else "cpu", devices=1)
    run_dir = train(cfg, callbacks=[cap], hardware=plan, **QUIET)
    assert len(cap.losses) == 4 and all(torch.isfinite(torch.tensor(cap.losses)))
    status = json.loads((run_dir / "hardware.json").read_text())["compile_status"]
    assert status["compiled"] == plan.compile and status["fallback"] is None, status


def test_refinement_runs_at_its_own_matmul_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller that allowed TF32 keeps it; the fit runs at the plan's "highest" inside,
    in production and in `recon bench-refine` alike (both call `refine_modal`)."""
    from recon.refine import modal as refine_mod
    from recon.refine.fit_bench import bench_refine_one

    seen: list[str] = []
    real = refine_mod.FrameModel.linearise

    def spy(self, *args, **kwargs):
        seen.append(torch.get_float32_matmul_precision())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(refine_mod.FrameModel, "linearise", spy)
    torch.set_float32_matmul_precision("medium")
    try:
        row = bench_refine_one(16, "cpu", n=2, batch_size=2, repeats=1)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision("highest")
    assert seen and set(seen) == {"highest"}
    assert (row.dtype, row.matmul) == ("float32", hardware_plan("cpu").refine_matmul)


DDP_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from common.hardware import HardwarePlan, hardware_plan
from recon.train import load_train_config, train
plan = HardwarePlan(**{{**hardware_plan("cuda", bf16=True).describe(), "compile": False}})
cfg = load_train_config("quick").with_overrides(**{{
    "data.train": {train!r}, "data.val": {val!r}, "out_dir": {out!r}, "batch_size": 8,
    "epochs": 1, "accelerator": "cpu", "devices": 2, "data.placement": "device"}})
train(cfg, hardware=plan, enable_progress_bar=False, enable_model_summary=False)
"""


def test_cuda_plan_under_ddp_sets_the_memory_format_before_wrapping(
    tiny: Path, tmp_path: Path
) -> None:
    """Two DDP processes (gloo) with the CUDA plan: channels_last is applied before DDP
    builds its gradient buckets (after, every step warns that the gradient strides do
    not match the bucket views and copies them), and each process holds its shard."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "ddp.py"
    script.write_text(
        DDP_SCRIPT.format(
            tests=str(root / "tests"),
            train=str(tiny / "train.h5"),
            val=str(tiny / "val.h5"),
            out=str(tmp_path / "runs"),
        )
    )
    path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env,
        cwd=root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "strides do not match bucket view" not in proc.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2  # 32 samples, 2 processes of 16, batches of 8
