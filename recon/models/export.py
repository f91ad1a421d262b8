"""Export a trained reconstructor for real-time AO software: TorchScript, ONNX or AOTInductor.

The exported graph is the whole `ReconModel` (per-wavelength normalisation and the
network): clear-pupil-normalised intensities (B, L, H, W) -> OPD (B, 1, H, W) in nm.
The checkpoint's metadata (wavelengths, sampling, units) travels inside the file:
TorchScript as an extra file `zwfs_meta.json`, ONNX as metadata properties, AOTInductor
as the package's metadata (key ``zwfs_meta``).

``aoti`` is the compiled path: `torch.export` then AOTInductor, a ``.pt2`` package of
ahead-of-time compiled kernels for one device (cpu or cuda), any batch size. It loads
without the model's Python code, from Python (`torch._inductor.aoti_load_package`) or
C++ (`torch::inductor::AOTIModelPackageLoader`). Compiling needs a C++ compiler and takes
about a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from recon.models.checkpoint import load_checkpoint

__all__ = ["FORMATS", "batch1_latency_ms", "export_model", "load_aoti", "max_export_error"]

FORMATS = ("torchscript", "onnx", "aoti")
SUFFIXES = {"torchscript": ".pt", "onnx": ".onnx", "aoti": ".pt2"}
META_FILE = "zwfs_meta.json"


def _portable_meta(meta: dict[str, Any]) -> dict[str, Any]:
    keep = ("arch", "model_kwargs", "wavelengths_m", "npix", "checkpoint")
    out = {k: meta[k] for k in keep if k in meta}
    out.update(
        input="intensity (B, L, H, W), clear-pupil normalised", output="opd (B, 1, H, W) [nm]"
    )
    return json.loads(json.dumps(out, default=str))


def _example(meta: dict[str, Any], batch: int = 2) -> torch.Tensor:
    n_l, npix = len(meta["wavelengths_m"]), int(meta["npix"])
    gen = torch.Generator().manual_seed(0)
    return 0.5 + torch.rand(batch, n_l, npix, npix, generator=gen)  # typical normalised levels


def export_model(
    checkpoint: str | Path,
    fmt: Literal["torchscript", "onnx", "aoti"],
    out: str | Path | None = None,
    device: str = "cpu",
) -> Path:
    """Write the exported model next to the checkpoint (or to `out`); returns its path.

    `device`: where an ``aoti`` package runs (its kernels are compiled for it).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format '{fmt}': use one of {', '.join(FORMATS)}")
    model, meta = load_checkpoint(checkpoint)
    model.eval()
    meta = {**meta, "checkpoint": str(checkpoint)}
    out = Path(out) if out else Path(checkpoint).with_suffix(SUFFIXES[fmt])
    out.parent.mkdir(parents=True, exist_ok=True)
    example = _example(meta)
    info = json.dumps(_portable_meta(meta))
    tmp = out.with_name(out.stem + ".tmp" + SUFFIXES[fmt])  # AOTInductor wants .pt2
    with torch.no_grad():
        if fmt == "torchscript":
            traced = torch.jit.trace(model, example, check_trace=False)
            torch.jit.save(traced, str(tmp), _extra_files={META_FILE: info})
        elif fmt == "onnx":
            _export_onnx(model, example, tmp, info)
        else:
            _export_aoti(model.to(device), example.to(device), tmp, info)
    tmp.replace(out)
    return out


def _export_aoti(model: torch.nn.Module, example: torch.Tensor, path: Path, info: str) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():  # torch's own deprecation notices, not the user's concern
        warnings.simplefilter("ignore")
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch._inductor.aoti_compile_and_package(
        program,
        package_path=str(path),
        inductor_configs={"aot_inductor.metadata": {"zwfs_meta": info}},
    )


def load_aoti(path: str | Path) -> Any:
    """A compiled ``.pt2`` package as a callable (frames tensor -> OPD tensor [nm]).

    ``load_aoti(path).get_metadata()["zwfs_meta"]`` is the checkpoint's metadata (JSON).
    """
    return torch._inductor.aoti_load_package(str(path))


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, info: str) -> None:
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "ONNX export needs the 'export' extra: pip install 'zwfs[export]'"
        ) from None
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=["intensity"],
        output_names=["opd_nm"],
        dynamic_shapes={"intensity": {0: batch}},
        verbose=False,
    )
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = "zwfs_meta", info
    onnx.save(proto, str(path))


def _runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The exported model, loaded once, as frames (B, L, H, W) float32 -> OPD (NumPy)."""
    if path.suffix == ".pt2":
        loaded = load_aoti(path)
        device = loaded.get_metadata().get("AOTI_DEVICE_KEY", "cpu")

        def run_aoti(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return loaded(torch.from_numpy(x).to(device)).cpu().numpy()

        return run_aoti
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"intensity": x})[0]
    scripted = torch.jit.load(str(path))

    def run_script(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return scripted(torch.from_numpy(x)).numpy()

    return run_script


def _eager(checkpoint: str | Path) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any]]:
    model, meta = load_checkpoint(checkpoint)
    model.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return run, meta


def max_export_error(checkpoint: str | Path, exported: str | Path, batch: int = 3) -> float:
    """Largest |exported - eager| / max|eager| on random frames of an unseen batch size."""
    eager, meta = _eager(checkpoint)
    x = _example(meta, batch=batch).numpy()
    want = eager(x)
    got = _runner(Path(exported))(x)
    return float(np.abs(got - want).max() / np.abs(want).max())


def batch1_latency_ms(
    checkpoint: str | Path, exported: str | Path, repeats: int = 30
) -> dict[str, float]:
    """Median batch-1 latency [ms] of the eager model and the export, same frames, same run.

    Frames in and OPD out as NumPy on the host (a lab script's view), after 3 warm-up calls.
    """
    eager, meta = _eager(checkpoint)
    x = _example(meta, batch=1).numpy()
    out = {}
    for name, run in (("eager_ms", eager), ("exported_ms", _runner(Path(exported)))):
        for _ in range(3):
            run(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(x)
            times.append(1e3 * (time.perf_counter() - t0))
        out[name] = statistics.median(times)
    return out
