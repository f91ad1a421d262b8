"""`scripts/gpu_bench.sh --smoke`: every step of the GPU benchmark runs on the CPU at tiny
size, under the CUDA hardware plan, trains through `recon train`'s Lightning step, says
whether it compiled, and writes its JSON and Markdown (the figures themselves need a GPU)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_smoke_run_writes_every_figure(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_bench.sh"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert result["engine"]["wavefront_wavelengths_per_s"] > 0
    assert set(result["generate"]) == {"train", "val", "test"}
    assert {r["arch"] for r in result["speed"]} == {"phenn", "gru"}
    assert all(r["train_samples_per_s"] > 0 and r["infer_latency_ms"] > 0 for r in result["speed"])
    assert result["plan"]["device"] == "cuda" and result["plan"]["precision"] == "bf16-mixed"
    for r in result["speed"]:  # what ran, not what was asked
        assert r["train_compile"]["compiled"] and r["train_compile"]["graphs"] >= 1, r
        assert r["infer_compile"]["compiled"], r
    assert all(r["compile_status"]["compiled"] for r in result["training"])
    trained = {r["arch"]: r for r in result["training"]}
    assert set(trained) == {"gru", "phenn"}
    assert all(r["steps"] >= 1 and r["analytic_capture_range_nm"] >= 25 for r in trained.values())
    assert result["refine"]["converged_fraction"] == 1.0
    assert result["refine"]["jacobian_max_rel_diff"] < 1e-5
    md = (tmp_path / "gpu_bench.md").read_text()
    assert "| gru |" in md and "Modal refinement" in md
