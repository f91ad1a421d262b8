"""The ZWFS block study: U-Nets from every registered block at the FLOPs of the residual
PhENN of configs/recon/quickstart.yaml (64 px, 4 wavelengths).

    python3 scripts/block_study.py configs --out studies  # a training config per block
    python3 scripts/block_study.py bench --out studies    # latency, training ms/sample
    python3 scripts/block_study.py table --out studies    # with studies/report_e: table

`scripts/studies.sh e` runs the three around the trainings and the evaluation. The
widths of each block are the quick-start widths times one factor (`widths_for_flops`);
timings are on the CPU with `--threads` threads, each block timed once per round, in
`--rounds` interleaved rounds, the lowest round kept (the machine may be shared).
Writes block_configs.json, block_bench.json and study_e.json in --out, and
docs/images/study_e_pareto.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

NPIX, N_WL, BATCH = 64, 4, 16
SHAPE = (1, N_WL, NPIX, NPIX)  # one frame, batch 1
PLOT = Path("docs/images/study_e_pareto.png")


def _quickstart():
    from recon.train.config import load_train_config

    return load_train_config("quickstart").with_overrides(arch="phenn")


def _net(kwargs: dict[str, Any], block: str, widths: list[int]):
    from recon.nn import create_model

    return create_model("phenn", in_ch=N_WL, **{**kwargs, "block": block, "widths": widths})


def write_configs(out: Path) -> dict[str, Any]:
    """block_<name>.yaml for every registered block, at the residual U-Net's FLOPs."""
    import yaml

    from recon.nn import count_flops, count_parameters, list_blocks
    from recon.nn.scaling import widths_for_flops

    base = _quickstart()
    kw = {**base.kwargs, "block": "residual"}
    widths = list(kw["widths"])
    target = count_flops(_net(kw, "residual", widths), SHAPE)
    rows: dict[str, Any] = {}
    for block in list_blocks():
        w, flops = widths_for_flops(lambda v, b=block: _net(kw, b, v), widths, target, SHAPE)
        cfg = base.model_dump(mode="json")
        cfg["model_kwargs"] = {"phenn": {**kw, "block": block, "widths": w}}
        (out / f"block_{block}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        params = count_parameters(_net(kw, block, w))
        rows[block] = {"widths": w, "flops": flops, "params": params}
        print(f"{block:12s} widths {w}  {flops / 1e6:6.1f} MFLOP  {params / 1e6:.3f} M")
    (out / "block_configs.json").write_text(json.dumps(rows, indent=2))
    return rows


def _latency_ms(cfg, repeats: int) -> float:
    """Median batch-1 forward [ms] of the network as `recon eval` runs it (RepConv fused)."""
    import torch

    from recon.models import NormStats, build_model
    from recon.nn import measure_latency, reparameterize_model

    stats = NormStats((1.0,) * N_WL, (0.3,) * N_WL, 250.0, 1)
    torch.manual_seed(0)
    model = build_model("phenn", cfg.kwargs, N_WL, stats).eval()
    return measure_latency(reparameterize_model(model), SHAPE, warmup=3, repeats=repeats)


def _train_ms(cfg, steps: int) -> float:
    """Median training step [ms per sample] of `recon train`'s own step, batch 16."""
    import torch

    from common.hardware import hardware_plan
    from recon.models import NormStats, build_model
    from recon.train.network_bench import time_lightning_steps

    stats = NormStats((1.0,) * N_WL, (0.3,) * N_WL, 250.0, 1)
    torch.manual_seed(0)
    model = build_model("phenn", cfg.kwargs, N_WL, stats)
    x = torch.rand(BATCH, N_WL, NPIX, NPIX) * 2
    y = torch.randn(BATCH, 1, NPIX, NPIX) * 250.0
    run_cfg = cfg.with_overrides(accelerator="cpu", batch_size=BATCH)
    rate, _ = time_lightning_steps(run_cfg, model, (x, y), steps, hardware_plan("cpu"))
    return 1e3 / rate


def bench(out: Path, rounds: int, steps: int, repeats: int, threads: int) -> dict[str, Any]:
    """Latency and training ms/sample of every block's config, `rounds` interleaved rounds."""
    import torch

    from recon.train.config import load_train_config
    from recon.train.quiet import quiet_lightning

    quiet_lightning()
    torch.set_num_threads(threads)
    blocks = list(json.loads((out / "block_configs.json").read_text()))
    cfgs = {b: load_train_config(out / f"block_{b}.yaml") for b in blocks}
    lat: dict[str, list[float]] = {b: [] for b in blocks}
    train: dict[str, list[float]] = {b: [] for b in blocks}
    for r in range(rounds):
        for b in blocks:
            lat[b].append(_latency_ms(cfgs[b], repeats))
            train[b].append(_train_ms(cfgs[b], steps))
            print(f"round {r + 1}/{rounds} {b:12s} {lat[b][-1]:7.2f} ms  "
                  f"{train[b][-1]:6.2f} ms/sample", file=sys.stderr)  # fmt: skip
    rows = {
        b: {"latency_ms": min(lat[b]), "train_ms_per_sample": min(train[b]),
            "latency_rounds_ms": lat[b], "train_rounds_ms": train[b]}
        for b in blocks
    }  # fmt: skip
    record = {"threads": threads, "rounds": rounds, "train_steps": steps,
              "latency_repeats": repeats, "blocks": rows}  # fmt: skip
    (out / "block_bench.json").write_text(json.dumps(record, indent=2))
    return record


def pareto_front(points: dict[str, tuple[float, float]]) -> set[str]:
    """Names of the points that no other point beats in both coordinates (lower is better)."""
    return {
        a
        for a, (x, y) in points.items()
        if not any(u <= x and v <= y and (u, v) != (x, y) for u, v in points.values())
    }


def table(out: Path, report: Path) -> list[dict[str, Any]]:
    """Join configs, bench and the evaluation; print the table, write JSON and the plot."""
    configs = json.loads((out / "block_configs.json").read_text())
    timing = json.loads((out / "block_bench.json").read_text())
    estimators = json.loads(report.read_text())["estimators"]
    missing = [b for b in configs if b not in estimators]
    if missing:
        _fail(f"{report} has no estimator named {', '.join(missing)}")
    rows = []
    for b, c in configs.items():
        e, t = estimators[b], timing["blocks"][b]
        rows.append({"block": b, **c, **{k: v for k, v in t.items() if "rounds" not in k},
                     "median_residual_nm": e["summary"]["median_residual_nm"],
                     "capture_range_nm": e["capture_range_nm"]})  # fmt: skip
    ref = next(r for r in rows if r["block"] == "residual")
    front = pareto_front({r["block"]: (r["latency_ms"], r["median_residual_nm"]) for r in rows})
    for r in rows:
        r["residual_vs_residual_block"] = r["median_residual_nm"] / ref["median_residual_nm"]
        r["latency_vs_residual_block"] = r["latency_ms"] / ref["latency_ms"]
        r["pareto"] = r["block"] in front
    rows.sort(key=lambda r: r["median_residual_nm"])
    print("| block        | params | MFLOP | res. nm | ratio | capt. | lat ms | tr. ms |")
    print("|--------------|-------:|------:|--------:|------:|------:|-------:|-------:|")
    for r in rows:
        name = r["block"] + (" *" if r["pareto"] else "")
        print(f"| {name:12s} | {r['params'] / 1e6:4.2f} M | {r['flops'] / 1e6:5.1f} | "
              f"{r['median_residual_nm']:7.2f} | {r['residual_vs_residual_block']:5.2f} | "
              f"{r['capture_range_nm']:5.0f} | {r['latency_ms']:6.2f} | "
              f"{r['train_ms_per_sample']:6.2f} |")  # fmt: skip
    print("res. nm: median residual RMS; ratio: to the residual block's; capt.: capture\n"
          "range [nm]; lat ms: batch-1 forward; tr. ms: training ms per sample;\n"
          "*: on the Pareto front of residual and latency")  # fmt: skip
    for r in rows:
        print(f"{r['block']}: widths {r['widths']}")
    record = {"bench": {k: v for k, v in timing.items() if k != "blocks"}, "rows": rows}
    (out / "study_e.json").write_text(json.dumps(record, indent=2))
    _plot(rows, front, PLOT)
    return rows


def _plot(rows: list[dict[str, Any]], front: set[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for r in rows:
        on = r["block"] in front
        ax.plot(r["latency_ms"], r["median_residual_nm"], "o", color="C3" if on else "C0")
        ax.annotate(r["block"], (r["latency_ms"], r["median_residual_nm"]), fontsize=8,
                    xytext=(3, 3), textcoords="offset points")  # fmt: skip
    pts = sorted((r["latency_ms"], r["median_residual_nm"]) for r in rows if r["block"] in front)
    ax.plot(*zip(*pts, strict=True), "-", color="C3", lw=1, label="Pareto front")
    ax.set(xlabel="CPU batch-1 latency [ms]", ylabel="median residual RMS [nm]",
           title="U-Nets at equal FLOPs, 64 px, 4 wavelengths")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fail(message: str) -> None:
    """One line on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("configs", "bench", "table"))
    parser.add_argument("--out", type=Path, default=Path("studies"), help="study folder")
    parser.add_argument("--rounds", type=int, default=3, help="bench: interleaved rounds")
    parser.add_argument("--steps", type=int, default=5, help="bench: timed training steps")
    parser.add_argument("--repeats", type=int, default=20, help="bench: timed forwards")
    parser.add_argument("--threads", type=int, default=1, help="bench: torch CPU threads")
    parser.add_argument("--report", type=Path, help="table: report.json [OUT/report_e]")
    args = parser.parse_args(argv)
    if min(args.rounds, args.steps, args.repeats, args.threads) < 1:
        _fail("--rounds, --steps, --repeats and --threads must be >= 1")
    if not args.out.is_dir():
        _fail(f"--out {args.out} is not a folder")
    needed = {"bench": ["block_configs.json"], "table": ["block_configs.json", "block_bench.json"]}
    for name in needed.get(args.step, []):
        if not (args.out / name).is_file():
            _fail(f"{args.out / name} is missing: run the earlier steps first")
    if args.step == "configs":
        write_configs(args.out)
    elif args.step == "bench":
        bench(args.out, args.rounds, args.steps, args.repeats, args.threads)
    else:
        report = args.report or args.out / "report_e" / "report.json"
        if not report.is_file():
            _fail(f"no evaluation report at {report}")
        table(args.out, report)


if __name__ == "__main__":
    main()
