"""The engine's arithmetic floor on one core: its forward against the parts it cannot drop.

    python3 scripts/engine_floor.py [CONFIG] [OUT.json]   # paper, bench/engine_floor.json

Times, per wavefront and wavelength, one thread, batch 8 (as `sim bench` runs the engine):
the whole low-rank forward (`ZWFSModel.forward`); its elementwise passes alone (phase,
cosine and sine, pupil amplitude, squared modulus: no dot); its two low-rank products
alone (<inp_k, E> and E - sum_k c_k out_k). docs/simulation.md compares them with a
POPPY budget.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from sim.config import load_sim_config
from sim.zwfs import ZWFSModel

BATCH = 8


def per_wavefront_ms(fn, n_wavefronts: int, repeats: int = 50) -> float:
    """Best-of-3 mean time of fn [ms] per wavefront and wavelength."""
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - t0) / repeats)
    return 1e3 * best / n_wavefronts


def main() -> None:
    config = sys.argv[1] if len(sys.argv) > 1 else "paper"
    out_path = Path(sys.argv[2] if len(sys.argv) > 2 else "bench/engine_floor.json")
    torch.set_num_threads(1)
    cfg = load_sim_config(config)
    model = ZWFSModel(cfg)
    n, n_l = cfg.pupil.npix, len(cfg.wavelengths_um)
    opd = torch.randn(BATCH, n, n, dtype=model.real_dtype) * 100
    out, inp_t = model.low_rank_terms()
    result = opd.new_empty(BATCH, n_l, n, n)
    e = opd.new_empty(BATCH, 2, n, n)
    phase = torch.empty_like(opd)
    flat = e.view(2 * BATCH, n * n)

    def elementwise() -> None:
        for li in range(n_l):
            torch.mul(opd, model.wavenumber_per_nm[li], out=phase)
            torch.cos(phase, out=e[:, 0])
            torch.sin(phase, out=e[:, 1])
            e.mul_(model.amplitude)
            torch.mul(e[:, 0], e[:, 0], out=result[:, li])
            result[:, li].addcmul_(e[:, 1], e[:, 1])

    def products() -> None:
        for li in range(n_l):
            coeff = flat @ inp_t[li]
            flat.addmm_(coeff, out[li], alpha=-1)

    count = BATCH * n_l
    with torch.no_grad():
        rows = {
            "forward": per_wavefront_ms(lambda: model(opd), count),
            "elementwise passes": per_wavefront_ms(elementwise, count),
            "low-rank products": per_wavefront_ms(products, count),
        }
    print(f"{config}: {n} px, {n_l} wavelengths, {out.shape[1]} low-rank terms, 1 thread")
    print(f"{'part':<20} {'ms per wavefront and wavelength':>32}")
    for name, ms in rows.items():
        print(f"{name:<20} {ms:>32.4f}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    record = {"config": config, "npix": n, "terms": int(out.shape[1]), "ms_per_wf_wl": rows}
    out_path.write_text(json.dumps(record, indent=1))
    print(f"JSON: {out_path}")


if __name__ == "__main__":
    main()
