"""Config validation: defaults load, wrong values give one line naming the field."""

from __future__ import annotations

import pytest

from common.config import ConfigError
from sim.config import load_sim_config, validate_sim_config


def test_defaults_load() -> None:
    paper, quick = load_sim_config("paper"), load_sim_config("quick")
    assert paper.pupil.npix == 128 and quick.pupil.npix == 64
    assert paper.wavelengths_um == [0.96, 0.98, 1.0, 1.2]
    assert paper.focal_box_samples == 36  # 1.06 x 32 = 33.9 samples, plus the grey edge


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ({"wavelengths_um": []}, "wavelengths_um"),
        ({"wavelengths_um": [5.0]}, "wavelengths_um"),
        ({"aberration": {"rms_min_nm": -1}}, "aberration.rms_min_nm"),
        ({"aberration": {"rms_min_nm": 600}}, "rms_max_nm"),
        ({"focal": {"box_samples": 10}}, "focal.box_samples"),
        ({"pupil": {"npix": 100}, "detector": {"binning": 3}}, "detector.binning"),
        ({"pupil": {"diameter_m": 0}}, "pupil.diameter_m"),
        ({"mask": {"lambda0_um": 9}}, "mask.lambda0_um"),
        ({"pupil": {"npixx": 64}}, "pupil.npixx"),
    ],
)
def test_bad_values_name_the_field(data: dict, names: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_sim_config(data)
    message = str(err.value)
    assert names in message and "\n" not in message


def test_bad_files(tmp_path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("pupil: [unclosed")
    with pytest.raises(ConfigError, match="does not parse"):
        load_sim_config(broken)
    with pytest.raises(ConfigError, match="not found"):
        load_sim_config(tmp_path / "missing.yaml")


def test_overrides_are_validated() -> None:
    cfg = load_sim_config("paper").with_overrides(**{"pupil.npix": 64})
    assert cfg.pupil.npix == 64
    with pytest.raises(ConfigError, match="unknown sim config field"):
        cfg.with_overrides(**{"pupil.nope": 1})
