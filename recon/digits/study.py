"""The digits study (`recon digits`): three blocks, one-shot class addition, distillation.

1. Blocks: a `Classifier` from each block, its widths scaled to `params_target`
   parameters (`widths_for_cost`); test accuracy over seeds, parameters, FLOPs and the
   CPU batch-1 latency (interleaved rounds, the lowest kept).
2. DONE: for each block of 1 and each held-out digit, a classifier trained on the nine
   others gets the tenth class from k random training images of it
   (`Classifier.add_class`, no training); the accuracy of the new class and of the old
   ones, before and after, averaged over `draws` draws of the k images.
3. Distillation: a small student trained alone, with KD, and with KD and the feature
   loss, from one larger teacher; the same seeds for each, compared seed by seed.
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from recon.digits.data import N_CLASSES, Digits
from recon.digits.fit import Distillation, FitConfig, accuracy, fit_classifier, predict
from recon.nn import (
    Classifier,
    count_flops,
    count_parameters,
    create_model,
    measure_latency,
    widths_for_cost,
)

__all__ = ["StudyConfig", "quick_config", "run_study"]

IMAGE = (1, 1, 8, 8)  # batch 1 of one 8 x 8 grey image


@dataclass(frozen=True)
class StudyConfig:
    """What `run_study` runs; the defaults are `recon digits`'s."""

    blocks: tuple[str, ...] = ("residual", "dwsep", "elan")
    base_widths: tuple[int, ...] = (8, 16, 32)
    params_target: int = 40_000
    seeds: tuple[int, ...] = (0, 1, 2)
    fit: FitConfig = field(default_factory=lambda: FitConfig(epochs=40))
    latency_rounds: int = 3
    held_out: tuple[int, ...] = tuple(range(N_CLASSES))
    shots: tuple[int, ...] = (1, 5)
    draws: int = 20
    distill_block: str = "residual"
    teacher_widths: tuple[int, ...] = (32, 64, 128)
    student_widths: tuple[int, ...] = (4, 8, 16)
    distill_seeds: tuple[int, ...] = tuple(range(10))
    kd_weight: float = 0.5
    temperature: float = 4.0
    feature_weight: float = 1.0


def quick_config() -> StudyConfig:
    """A reduced study for tests: one block, one held-out digit, a few epochs."""
    return StudyConfig(
        blocks=("residual",), base_widths=(8, 16, 32), params_target=20_000, seeds=(0,),
        fit=FitConfig(epochs=5), latency_rounds=1, held_out=(3,), draws=3,
        teacher_widths=(8, 16, 32), distill_seeds=(0,),
    )  # fmt: skip


def _classifier(block: str, widths: list[int] | tuple[int, ...], classes: int) -> Classifier:
    return create_model("classifier", in_ch=1, out_ch=classes, widths=list(widths), block=block)


def _trained(block: str, widths, d: Digits, seed: int, fit: FitConfig, **kw: Any) -> Classifier:
    classes = int(d.y_train.max()) + 1
    torch.manual_seed(seed)
    model = _classifier(block, widths, classes)
    fit_classifier(model, d.x_train, d.y_train, replace(fit, seed=seed), **kw)
    return model


def _mean_sd(values: list[float]) -> dict[str, float]:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "sd": sd, "min": min(values), "max": max(values)}


def block_rows(d: Digits, cfg: StudyConfig) -> list[dict[str, Any]]:
    """Accuracy, parameters, FLOPs and latency of a classifier from each block."""
    rows, models = [], {}
    for block in cfg.blocks:
        widths, params = widths_for_cost(
            lambda w, b=block: _classifier(b, w, N_CLASSES), cfg.base_widths,
            cfg.params_target, count_parameters,
        )  # fmt: skip
        accs = []
        for seed in cfg.seeds:
            model = _trained(block, widths, d, seed, cfg.fit)
            accs.append(accuracy(model, d.x_test, d.y_test))
        models[block] = model
        flops = count_flops(model, IMAGE)
        rows.append({"block": block, "widths": widths, "params": int(params), "flops": flops,
                     "accuracy": _mean_sd(accs), "accuracies": accs})  # fmt: skip
    latency: dict[str, list[float]] = {b: [] for b in models}
    for _ in range(cfg.latency_rounds):  # interleaved: a busy machine slows every block alike
        for block, model in models.items():
            latency[block].append(measure_latency(model, IMAGE, warmup=10, repeats=50))
    for row in rows:
        row["latency_ms"] = min(latency[row["block"]])
    return rows


def _remap(y: torch.Tensor, held_out: int) -> torch.Tensor:
    """Labels of the nine kept digits as 0..8 (the held-out one will be class 9)."""
    return y - (y > held_out).long()


def done_rows(d: Digits, cfg: StudyConfig, widths: dict[str, list[int]]) -> list[dict[str, Any]]:
    """For each block (its `widths`) and held-out digit: old-class accuracy before; after
    adding the digit from k shots, the new class's accuracy (recall) and the old
    classes', mean over the draws."""
    return [row for block, w in widths.items() for row in _done_block(d, cfg, block, w)]


def _done_block(d: Digits, cfg: StudyConfig, block: str, widths: list[int]) -> list[dict]:
    rows = []
    for h in cfg.held_out:
        kept = d.without(h)
        nine = Digits(kept.x_train, _remap(kept.y_train, h), kept.x_test, _remap(kept.y_test, h))
        base = _trained(block, widths, nine, cfg.seeds[0], cfg.fit)
        before = accuracy(base, nine.x_test, nine.y_test)
        pool = d.x_train[d.y_train == h]  # training images of the held-out digit
        new_test = d.x_test[d.y_test == h]
        g = torch.Generator().manual_seed(h)
        for k in cfg.shots:
            new_acc, old_acc = [], []
            for _ in range(cfg.draws):
                model = copy.deepcopy(base)
                label = model.add_class(pool[torch.randperm(len(pool), generator=g)[:k]])
                new_acc.append((predict(model, new_test) == label).float().mean().item())
                old_acc.append(accuracy(model, nine.x_test, nine.y_test))
            rows.append({"block": block, "held_out": h, "shots": k, "old_before": before,
                         "old_after": statistics.fmean(old_acc),
                         "new": statistics.fmean(new_acc)})  # fmt: skip
    return rows


def distill_rows(d: Digits, cfg: StudyConfig) -> dict[str, Any]:
    """Test accuracy of the student alone, with KD, with KD and the feature loss; the
    distilled students' gain over the student alone of the same seed."""
    block = cfg.distill_block
    teacher = _trained(block, cfg.teacher_widths, d, 0, cfg.fit)
    variants = {
        "alone": None,
        "KD": Distillation(teacher, cfg.kd_weight, cfg.temperature, 0.0),
        "KD + feature": Distillation(teacher, cfg.kd_weight, cfg.temperature, cfg.feature_weight),
    }
    accs: dict[str, list[float]] = {name: [] for name in variants}
    for seed in cfg.distill_seeds:
        for name, distill in variants.items():
            model = _trained(block, cfg.student_widths, d, seed, cfg.fit, distill=distill)
            accs[name].append(accuracy(model, d.x_test, d.y_test))
    student = _classifier(block, cfg.student_widths, N_CLASSES)
    return {
        "block": block,
        "teacher": {"widths": list(cfg.teacher_widths), "params": count_parameters(teacher),
                    "accuracy": accuracy(teacher, d.x_test, d.y_test)},
        "student": {"widths": list(cfg.student_widths), "params": count_parameters(student)},
        "accuracy": {name: _mean_sd(a) for name, a in accs.items()},
        "gain_over_alone": {
            name: _gain(a, accs["alone"]) for name, a in accs.items() if name != "alone"
        },
        "accuracies": accs,
        "kd_weight": cfg.kd_weight, "temperature": cfg.temperature,
        "feature_weight": cfg.feature_weight,
    }  # fmt: skip


def _gain(accs: list[float], alone: list[float]) -> dict[str, float]:
    """Seed-by-seed accuracy gain over the student alone: mean, sd, min, max, and the
    number of seeds better and worse."""
    gains = [a - b for a, b in zip(accs, alone, strict=True)]
    return {**_mean_sd(gains), "better": sum(g > 0 for g in gains),
            "worse": sum(g < 0 for g in gains)}  # fmt: skip


def run_study(d: Digits, cfg: StudyConfig) -> dict[str, Any]:
    """The three experiments; a JSON-ready dict."""
    blocks = block_rows(d, cfg)
    return {
        "config": asdict(cfg),
        "data": {"train": len(d.y_train), "test": len(d.y_test)},
        "blocks": blocks,
        "done": done_rows(d, cfg, {r["block"]: r["widths"] for r in blocks}),
        "distillation": distill_rows(d, cfg),
    }


def tables(result: dict[str, Any]) -> str:
    """The three results as Markdown tables (80 columns)."""
    n = len(result["config"]["seeds"])
    lines = [f"| block | widths | params | kFLOP | accuracy % (mean, min; {n} seeds) | ms |",
             "|---|---|--:|--:|--:|--:|"]  # fmt: skip
    for r in result["blocks"]:
        a = r["accuracy"]
        lines.append(f"| {r['block']} | {r['widths']} | {r['params'] / 1e3:.1f} k | "
                     f"{r['flops'] / 1e3:.0f} | {100 * a['mean']:.2f}, {100 * a['min']:.2f} | "
                     f"{r['latency_ms']:.2f} |")  # fmt: skip
    lines += ["", "| block | shots | old classes before % | after % | change | new class % |",
              "|---|--:|--:|--:|--:|--:|"]  # fmt: skip
    for block in dict.fromkeys(r["block"] for r in result["done"]):
        for k in result["config"]["shots"]:
            rows = [r for r in result["done"] if r["shots"] == k and r["block"] == block]
            m = {key: 100 * statistics.fmean(r[key] for r in rows)
                 for key in ("old_before", "old_after", "new")}  # fmt: skip
            lines.append(f"| {block} | {k} | {m['old_before']:.2f} | {m['old_after']:.2f} | "
                         f"{m['old_after'] - m['old_before']:+.2f} | {m['new']:.1f} |")  # fmt: skip
    dist = result["distillation"]
    t, s = dist["teacher"], dist["student"]
    lines += ["", f"teacher {t['widths']} ({t['params'] / 1e3:.1f} k): "
              f"{100 * t['accuracy']:.2f} %; student {s['widths']} ({s['params'] / 1e3:.1f} k)",
              "", "| student | accuracy % (mean +- sd) | min | max |",
              "|---|--:|--:|--:|"]  # fmt: skip
    for name, a in dist["accuracy"].items():
        lines.append(f"| {name} | {100 * a['mean']:.2f} +- {100 * a['sd']:.2f} | "
                     f"{100 * a['min']:.2f} | {100 * a['max']:.2f} |")  # fmt: skip
    n = len(result["config"]["distill_seeds"])
    lines += ["", f"| student | gain over alone, points (mean +- sd) | better | worse (of {n}) |",
              "|---|--:|--:|--:|"]  # fmt: skip
    for name, g in dist["gain_over_alone"].items():
        lines.append(f"| {name} | {100 * g['mean']:+.2f} +- {100 * g['sd']:.2f} | "
                     f"{g['better']} | {g['worse']} |")  # fmt: skip
    return "\n".join(lines)
