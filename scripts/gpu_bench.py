"""Every GPU figure of the GPU-path issue in one run: one JSON and one Markdown table.

    bash scripts/gpu_bench.sh                 # one CUDA GPU (H100/H200)
    bash scripts/gpu_bench.sh --smoke         # the same steps on the CPU at tiny size

Steps, all under the CUDA hardware plan (`common.hardware.hardware_plan("cuda")`: bf16,
fused AdamW with clipping, channels_last, torch.compile; `--smoke` runs that same plan on
the CPU): (0) the device tests, ``ZWFS_TEST_DEVICE=cuda pytest -m device`` (engine, a
training step, online simulation, refinement, export on the GPU; not in `--smoke`);
(1) engine throughput (wavefront-wavelengths/s at batch 1024, 128 px, 4 wavelengths);
(2) `sim generate` of the paper sets (train 8000, val 1000, test 3000); (3) training
samples/s of PhENN and the GRU at batch 32 and 128 through `recon train`'s own Lightning
step, with batch-1 latency and batched frames/s of the inference path (CUDA graphs), and
whether each compiled; (4) a time-boxed `recon train` of the GRU and of PhENN on the
paper set, then the capture range of each against the analytic method on the test set;
(5) modal refinement (`recon bench-refine`): Jacobian against torch.func, whole-fit
samples/s at 128 px. Needs no network.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from common.hardware import HardwarePlan, hardware_plan

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Scale:
    """Sizes of one run of the script."""

    sim_config: str
    npix: int
    n_train: int
    n_val: int
    n_test: int
    engine_batch: int
    engine_batches: int
    bench_sizes: tuple[int, ...]
    bench_batches: tuple[int, ...]
    train_budget_s: float
    model_kwargs: dict[str, Any] | None  # None: the packaged configs' widths
    bench_steps: int = 5
    bench_repeats: int = 20
    infer_batch: int | None = None  # None: bench_one's default for the device
    refine_n: int = 1024  # samples of the modal-refinement benchmark
    refine_batch: int = 512


FULL = Scale("paper", 128, 8000, 1000, 3000, 1024, 20, (128,), (32, 128), 150.0, None)
SMOKE = Scale(
    "quick", 16, 64, 16, 48, 16, 2, (16,), (8,), 3.0,
    {"phenn": {"widths": [4, 8]}, "gru": {"widths": [4, 8]}}, 2, 3, 8, 4, 2,
)  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def engine_throughput(scale: Scale, device: torch.device) -> dict[str, Any]:
    """Wavefront-wavelengths per second of `ZWFSModel.forward` on random Zernike OPDs."""
    from sim.aberrations import sample_opd
    from sim.config import load_sim_config
    from sim.zwfs import ZWFSModel

    cfg = load_sim_config(scale.sim_config).with_overrides(**{"pupil.npix": scale.npix})
    model = ZWFSModel(cfg, device=device)
    rms = torch.linspace(0.0, cfg.aberration.rms_max_nm, scale.engine_batch).tolist()
    opd = sample_opd(cfg.aberration, model.basis(), model.mask, rms, seed=0)
    with torch.inference_mode():
        model(opd)  # warm-up
        _sync(device)
        start = time.perf_counter()
        for _ in range(scale.engine_batches):
            model(opd)
        _sync(device)
    seconds = time.perf_counter() - start
    per_s = scale.engine_batch * scale.engine_batches * len(cfg.wavelengths_um) / seconds
    return {"npix": scale.npix, "batch": scale.engine_batch, "wavefront_wavelengths_per_s": per_s}


def generate_sets(scale: Scale, folder: Path, device: torch.device) -> dict[str, Any]:
    """`sim generate` of train, val and test; wall seconds each."""
    from sim.config import load_sim_config
    from sim.generate import generate_dataset

    cfg = load_sim_config(scale.sim_config).with_overrides(**{"pupil.npix": scale.npix})
    out: dict[str, Any] = {}
    for split, n in (("train", scale.n_train), ("val", scale.n_val), ("test", scale.n_test)):
        start = time.perf_counter()
        generate_dataset(
            cfg, folder / f"{split}.h5", n, split=split, device=device.type, overwrite=True,
            batch_size=256 if device.type == "cuda" else 16,
        )  # fmt: skip
        out[split] = {"n": n, "seconds": time.perf_counter() - start}
    return out


def device_tests(folder: Path) -> dict[str, Any]:
    """``ZWFS_TEST_DEVICE=cuda pytest -m device``: the summary line and the exit code."""
    env = {**os.environ, "ZWFS_TEST_DEVICE": "cuda"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "device", "-p", "no:cacheprovider"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    (folder / "device_tests.txt").write_text(proc.stdout + proc.stderr)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return {"returncode": proc.returncode, "summary": lines[-1] if lines else proc.stderr[-300:]}


def training_speed(scale: Scale, device: torch.device, plan: HardwarePlan) -> list[dict[str, Any]]:
    """`recon bench` rows: train samples/s, batch-1 latency, batched frames/s."""
    from dataclasses import asdict

    from recon.train import load_train_config
    from recon.train.network_bench import bench_one

    rows = []
    for arch in ("phenn", "gru"):
        cfg = load_train_config(arch)
        if scale.model_kwargs:
            cfg = cfg.with_overrides(model_kwargs=scale.model_kwargs)
        for npix in scale.bench_sizes:
            for batch in scale.bench_batches:
                result = bench_one(
                    cfg, npix, device.type, batch, scale.bench_steps, scale.bench_repeats,
                    infer_batch=scale.infer_batch, plan=plan,
                )  # fmt: skip
                rows.append(asdict(result))
    return rows


def timed_training(
    scale: Scale, folder: Path, device: torch.device, plan: HardwarePlan
) -> list[dict[str, Any]]:
    """GRU and PhENN, each trained for `train_budget_s`, then evaluated with the analytic
    method on the test set: capture ranges (paper and strict criteria)."""
    from recon.estimators import NetworkEstimator, create_baseline
    from recon.evaluation import evaluate
    from recon.train import load_train_config, train

    quiet = {"enable_progress_bar": False, "enable_model_summary": False}
    out = []
    for arch in ("gru", "phenn"):
        overrides: dict[str, Any] = {
            "data.train": str(folder / "train.h5"),
            "data.val": str(folder / "val.h5"),
            "out_dir": str(folder / "runs"),
            "epochs": 10_000,
            "budget_s": scale.train_budget_s,
            "early_stopping_patience": None,
            "accelerator": "gpu" if device.type == "cuda" else "cpu",
            "devices": 1,
        }
        if scale.model_kwargs:
            overrides["model_kwargs"] = scale.model_kwargs
        cfg = load_train_config(arch).with_overrides(**overrides)
        start = time.perf_counter()
        run_dir = train(cfg, hardware=plan, **quiet)
        seconds = time.perf_counter() - start
        net = NetworkEstimator.from_checkpoint(run_dir, device=device.type)
        analytic = create_baseline("analytic", folder / "test.h5")
        report = evaluate(
            {analytic.name: analytic, net.name: net}, folder / "test.h5", batch_size=256,
            reference=analytic.name,
        )  # fmt: skip
        est = report["estimators"]
        step = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
        out.append(
            {
                "arch": arch,
                "budget_s": scale.train_budget_s,
                "wall_s": seconds,
                "steps": step,
                "samples_per_s": step * cfg.batch_size / seconds,
                "capture_range_nm": est[net.name]["capture_range_nm"],
                "capture_range_strict_nm": est[net.name]["capture_range_strict_nm"],
                "analytic_capture_range_nm": est[analytic.name]["capture_range_nm"],
                "ratio_to_analytic": est[net.name]["ratio_to_analytic"],
                "median_residual_nm": est[net.name]["summary"]["median_residual_nm"],
                "compile_status": json.loads((run_dir / "hardware.json").read_text())[
                    "compile_status"
                ],
                "run_dir": str(run_dir),
            }
        )
    return out


def refinement_speed(scale: Scale, device: torch.device) -> dict[str, Any]:
    """`recon bench-refine` at the scale's sampling: Jacobian ms/sample and fits/s."""
    from dataclasses import asdict

    from recon.refine.fit_bench import bench_refine_one

    npix = scale.bench_sizes[-1]
    row = bench_refine_one(npix, device, n=scale.refine_n, batch_size=scale.refine_batch)
    return asdict(row)


def _compiled(status: dict[str, Any]) -> str:
    if not status.get("requested"):
        return "eager (not asked)"
    if status.get("fallback"):
        return f"eager: {status['fallback']}"
    return f"{status.get('graphs', 0)} graphs"


def markdown(result: dict[str, Any]) -> str:
    """The figures as Markdown tables."""
    e = result["engine"]
    plan = result["plan"]
    tests = result.get("device_tests")
    lines = [
        f"# GPU benchmark ({result['device']}, {result['scale']})",
        "",
        f"Plan: {plan['device']} plan, {plan['precision']}, fused AdamW {plan['fused_adamw']}, "
        f"compile {plan['compile']}, channels_last {plan['channels_last']}.",
        "",
        "Device tests: "
        + (
            "not run (smoke)"
            if tests is None
            else f"{tests['summary']} (exit {tests['returncode']})"
        ),
        "",
        f"Engine: {e['wavefront_wavelengths_per_s']:,.0f} wavefront-wavelengths/s "
        f"({e['npix']} px, batch {e['batch']}).",
        "",
        "| sim generate | samples | seconds |",
        "| --- | ---: | ---: |",
        *(f"| {k} | {v['n']} | {v['seconds']:.1f} |" for k, v in result["generate"].items()),
        "",
        "| arch | px | batch | train/s | lat. ms | frames/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["speed"]:
        lines.append(
            f"| {r['arch']} | {r['npix']} | {r['batch_size']} | "
            f"{r['train_samples_per_s']:,.0f} | {r['infer_latency_ms']:.3f} | "
            f"{r['infer_frames_per_s']:,.0f} |"
        )
    lines += [""]
    for r in result["speed"]:
        lines.append(
            f"- compiled, {r['arch']} batch {r['batch_size']}: training "
            f"{_compiled(r['train_compile'])}, inference {_compiled(r['infer_compile'])}"
        )
    lines += [
        "",
        "| trained | s | steps | smp/s | capture nm | strict nm | analytic nm | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["training"]:
        ratio = "-" if r["ratio_to_analytic"] is None else f"{r['ratio_to_analytic']:.1f}x"
        lines.append(
            f"| {r['arch']} | {r['budget_s']:.0f} | {r['steps']} | {r['samples_per_s']:,.0f} | "
            f"{r['capture_range_nm']:.0f} | {r['capture_range_strict_nm']:.0f} | "
            f"{r['analytic_capture_range_nm']:.0f} | {ratio} |"
        )
    lines += [""]
    for r in result["training"]:
        lines.append(f"- compiled, recon train {r['arch']}: {_compiled(r['compile_status'])}")
    r = result["refine"]
    lines += [
        "",
        f"Modal refinement ({r['npix']} px, {r['samples']} samples, batch {r['batch_size']}, "
        f"{r['dtype']}, matmul {r['matmul']}, starts 20 % + 5 nm off): "
        f"{r['refine_samples_per_s']:,.0f} fits/s "
        f"({r['refine_ms']:.3f} ms/sample), median {r['iterations_median']:.0f} iterations, "
        f"{100 * r['converged_fraction']:.0f} % converged, median residual "
        f"{r['residual_median_nm']:.1e} nm; Jacobian {r['jacobian_ms']:.3f} ms/sample against "
        f"{r['jacobian_peer_ms']:.3f} by torch.func ({r['jacobian_speedup']:.1f}x).",
    ]
    lines.append(f"\nTotal wall time: {result['wall_s']:.0f} s.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--out", type=Path, default=Path("bench/gpu_bench"))
    args = parser.parse_args()
    scale = SMOKE if args.smoke else FULL
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; run with --smoke for the CPU check")
    device = torch.device("cpu" if args.smoke else "cuda")
    # the CUDA plan in both: --smoke runs the GPU configuration on the CPU
    plan = hardware_plan("cuda", bf16=True) if args.smoke else hardware_plan("cuda")
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "data"
    data.mkdir(exist_ok=True)
    start = time.perf_counter()
    result: dict[str, Any] = {
        "scale": "smoke (CPU, tiny)" if args.smoke else "full (paper sets, 128 px)",
        "device": torch.cuda.get_device_name()
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "plan": plan.describe(),
        "device_tests": None,
    }
    steps = [
        ("engine", lambda: engine_throughput(scale, device)),
        ("generate", lambda: generate_sets(scale, data, device)),
        ("speed", lambda: training_speed(scale, device, plan)),
        ("training", lambda: timed_training(scale, data, device, plan)),
        ("refine", lambda: refinement_speed(scale, device)),
    ]
    if not args.smoke:
        steps.insert(0, ("device_tests", lambda: device_tests(args.out)))
    for key, step in steps:
        t0 = time.perf_counter()
        result[key] = step()
        print(f"gpu_bench: {key} done in {time.perf_counter() - t0:.1f} s", flush=True)
        (args.out / "gpu_bench.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    result["wall_s"] = time.perf_counter() - start
    (args.out / "gpu_bench.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    text = markdown(result)
    (args.out / "gpu_bench.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
