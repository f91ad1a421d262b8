"""A lab's ZWFS from one file: unit conversions, pyZELDA's description, every --config."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from common.config import ConfigError
from sim.cli import app
from sim.config import load_sim_config, system_sim_config
from sim.mask import dot_phase_rad, fused_silica_index
from sim.system_file import load_system_file, system_from_pyzelda

runner = CliRunner()

IRDIS_INI = """
[instrument]
name = SPHERE-IRDIS
pixel_scale = 12.25
[mask]
Fratio = 40
depth = 0.8146e-6
diameter = 70.7e-6
substrate = fused_silica
[pupil]
diameter = 384
anamorphism = (1.0, 0.99)
"""


def test_sphere_system_converts_to_the_engines_units() -> None:
    cfg = load_sim_config("sphere_zelda")
    # 70.7 um at F/40 and 1.642 um: 70.7 / (40 x 1.642) lambda0/D
    assert cfg.mask.diameter_lambda0_d == pytest.approx(70.7 / (40 * 1.642), rel=1e-12)
    n = float(fused_silica_index(np.array(1.642)))
    assert 1.44 < n < 1.445  # fused silica in the H band (Malitson)
    assert cfg.mask.opd_depth_nm == pytest.approx((n - 1) * 814.6, rel=1e-12)
    theta = dot_phase_rad([1.642], cfg.mask)[0]
    assert theta == pytest.approx(2 * np.pi * (n - 1) * 0.8146 / 1.642, rel=1e-12)
    assert (cfg.pupil.diameter_m, cfg.pupil.npix, cfg.wavelengths_um) == (8.0, 64, [1.642])


def test_dot_diameter_given_once_and_achromatic_depth_is_the_opd() -> None:
    base = {"name": "bench", "telescope_diameter_m": 1.0, "wavelengths_um": [1.0],
            "camera": {"pupil_px": 64}}  # fmt: skip
    dot = {"depth_um": 0.25, "substrate": "achromatic_opd", "lambda0_um": 1.0}
    cfg = system_sim_config({**base, "dot": {**dot, "diameter_lambda0_d": 1.06}})
    assert (cfg.mask.diameter_lambda0_d, cfg.mask.opd_depth_nm) == (1.06, 250.0)
    for bad in ({}, {"diameter_lambda0_d": 1.0, "diameter_um": 50.0, "f_ratio": 40.0},
                {"diameter_um": 50.0}):  # fmt: skip
        with pytest.raises(ConfigError, match="diameter_um with f_ratio"):
            system_sim_config({**base, "dot": {**dot, **bad}})


def test_pyzelda_description_round_trips_through_sim_system(tmp_path) -> None:
    ini = tmp_path / "SPHERE-IRDIS.ini"
    ini.write_text(IRDIS_INI)
    system = system_from_pyzelda(ini, [1.642], 8.0)
    assert system.camera.pupil_px == 384 and system.dot.lambda0_d == pytest.approx(1.0764, 1e-4)
    out = tmp_path / "irdis.yaml"
    args = ["system", "--from-pyzelda", str(ini), "--wavelengths", "1.642", "--telescope", "8",
            "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "0.439 pi" in result.output  # the dot phase at 1.642 um
    ours = load_sim_config("sphere_zelda").model_dump()
    assert load_sim_config(out).model_dump() == ours  # the file in configs/ is pyZELDA's
    assert load_system_file(out).name == "SPHERE-IRDIS"
    bad = tmp_path / "bad.ini"
    bad.write_text("[mask]\nFratio = forty\n")
    result = runner.invoke(app, [*args[:2], str(bad), *args[3:]])
    assert result.exit_code == 2 and "not a pyZELDA instrument file" in result.output


def test_sim_generate_takes_a_system_file(tmp_path) -> None:
    path = tmp_path / "sys.yaml"
    data = yaml.safe_load(load_system_file("sphere_zelda").model_dump_json())
    data["model_px"] = 32
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "d.h5"
    args = ["generate", "--config", str(path), "--n", "2", "--out", str(out), "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with h5py.File(out) as f:
        assert f["intensity"].shape == (2, 1, 32, 32)
        mask = json.loads(f.attrs["config"])["mask"]
    assert mask["diameter_lambda0_d"] == pytest.approx(1.0764, rel=1e-4)
    data["dot"]["depth_um"] = -1
    path.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, [*args[:-2], "--overwrite"])
    assert result.exit_code == 2 and "depth_um" in result.output
    assert len(result.output.strip().splitlines()) == 1
