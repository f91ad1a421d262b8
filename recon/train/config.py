"""Validated training configuration (`recon train`); YAML defaults are packaged in `configs/recon/`.

A wrong value raises `common.config.ConfigError` with one line that names the field and
what is allowed. The network is chosen by `arch` (a registry name); its keyword
arguments come from `model_kwargs[arch]`, so one file can hold settings for several
architectures (`configs/recon/quick.yaml` holds tiny ones for phenn and gru).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

import recon.models  # noqa: F401  (register the models that `arch` may name)
from common.config import apply_dotted, check_wavelengths_um, read_yaml_mapping, validate_model
from common.hardware import PRECISIONS, HardwarePlan, hardware_plan
from recon.nn.registry import MODELS

__all__ = [
    "DataConfig",
    "LossConfig",
    "OptimConfig",
    "TrainConfig",
    "load_train_config",
    "validate_train_config",
]

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Datasets, wavelengths and loading."""

    train: Path = Field(Path("datasets/train.h5"), description="training dataset file")
    val: Path | None = Field(
        Path("datasets/val.h5"), description="validation file; missing: split off train"
    )
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description="share of train used for validation when val is missing"
    )
    wavelengths_um: list[float] | None = Field(
        None, description="wavelengths to train on [um], in recurrent order; None: all"
    )
    npix: int | None = Field(None, ge=8, description="required sampling [px]; None: the data's")
    num_workers: int | None = Field(
        None, ge=0, le=64, description="DataLoader worker processes; None: CPUs - 1, at most 8"
    )
    placement: Literal["auto", "device", "pinned", "loader"] = Field(
        "auto",
        description="device: the whole set in the training device's memory, batches by "
        "indexing; pinned: in pinned host memory; loader: DataLoader workers reading the "
        "file; auto: device when it fits, else pinned (GPU) or loader (CPU)",
    )
    stats_samples: int = Field(1024, ge=1, description="samples read for normalisation stats")
    normalisation: Literal["mean", "clear"] = Field(
        "mean",
        description="mean: frames as they come (divided by the mean clear-pupil intensity); "
        "clear: divided by the clear frame pixel by pixel (pyZELDA's; uneven illumination "
        "leaves no pattern). Stored in the checkpoint: inference then needs the clear frames",
    )
    sim_config: str = Field(
        "paper", description="online training: the simulated system (packaged name or YAML path)"
    )
    online_samples_per_epoch: int = Field(
        8000, ge=1, description="online training: simulated samples per epoch"
    )
    online_val_samples: int = Field(
        1000, ge=1, description="online training without a val file: simulated val samples"
    )

    @model_validator(mode="after")
    def _wavelengths(self) -> DataConfig:
        if self.wavelengths_um is not None:
            check_wavelengths_um(self.wavelengths_um, "data.wavelengths_um")
        return self


class OptimConfig(_Strict):
    """Optimiser (AdamW) and learning-rate schedule."""

    lr: float = Field(1e-3, gt=0, le=1.0, description="peak learning rate")
    weight_decay: float = Field(1e-4, ge=0, le=1.0, description="AdamW weight decay")
    schedule: Literal["cosine", "plateau", "none"] = Field(
        "cosine", description="cosine over the epochs, reduce-on-plateau of val/loss, or none"
    )
    min_lr: float = Field(1e-6, ge=0, description="floor of the schedule")
    plateau_factor: float = Field(0.5, gt=0, lt=1, description="LR factor on a plateau")
    plateau_patience: int = Field(3, ge=0, description="epochs without improvement")
    grad_clip: float | None = Field(1.0, gt=0, description="gradient-norm clip; None: off")


class LossConfig(_Strict):
    """OPD loss: w_npcc * NPCC + w_pix * pixel loss, on OPD / opd_scale_nm, piston removed."""

    w_npcc: float = Field(1.0, ge=0, description="NPCC weight")
    w_pix: float = Field(1.0, ge=0, description="pixel-loss weight (normalised OPD)")
    pixel: Literal["mse", "l1"] = "mse"
    w_aux: float = Field(
        0.4, ge=0, description="weight of the deep-supervision loss (models that return aux maps)"
    )

    @model_validator(mode="after")
    def _not_both_zero(self) -> LossConfig:
        if self.w_npcc + self.w_pix == 0:
            raise ValueError("loss.w_npcc and loss.w_pix cannot both be 0")
        return self


class TrainConfig(_Strict):
    """Everything `recon train` needs; saved resolved as `config.yaml` in the run folder."""

    arch: str = Field("phenn", description="registered model name")
    model_kwargs: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="keyword arguments per architecture"
    )
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    loss: LossConfig = LossConfig()
    epochs: int = Field(50, ge=1, le=100_000)
    online: bool = Field(
        False, description="simulate every training batch on the device (no dataset file)"
    )
    budget_s: float | None = Field(
        None,
        gt=0,
        description="wall-time budget [s]: training stops when it is spent (or after `epochs`), "
        "and the cosine schedule follows the share spent; None: epochs alone",
    )
    batch_size: int = Field(32, ge=1, le=65_536, description="per device")
    early_stopping_patience: int | None = Field(
        10, ge=1, description="epochs without val/loss improvement; None: off"
    )
    precision: str = Field(
        "auto",
        description=f"one of {', '.join(PRECISIONS)}; auto: bf16-mixed on a GPU with bf16, else 32",
    )
    compile: bool | None = Field(
        None,
        description="torch.compile the network (falls back to eager if compiling fails); "
        "None: on for CUDA, off on the CPU",
    )
    accelerator: str = Field("auto", description="auto, cpu, gpu, cuda, mps")
    devices: int | Literal["auto"] = Field("auto", description="devices per node")
    num_nodes: int = Field(1, ge=1, description="nodes (SLURM / multi-node DDP)")
    seed: int = Field(0, ge=0)
    ema_decay: float | None = Field(None, gt=0, lt=1, description="EMA of weights; None: off")
    out_dir: Path = Field(Path("runs"), description="parent folder of the run folders")
    log_every_n_steps: int = Field(10, ge=1)

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value  # YAML `precision: 32`

    @model_validator(mode="after")
    def _checks(self) -> TrainConfig:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.accelerator not in ACCELERATORS:
            raise ValueError(
                f"accelerator must be one of {', '.join(ACCELERATORS)}, got {self.accelerator!r}"
            )
        MODELS.get(self.arch)  # an unknown name fails here, listing the known ones
        if isinstance(self.devices, int) and self.devices < 1:
            raise ValueError(f"devices must be >= 1 or 'auto', got {self.devices}")
        return self

    @property
    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the chosen architecture."""
        return dict(self.model_kwargs.get(self.arch, {}))

    def hardware(self) -> HardwarePlan:
        """The hardware plan of the configured accelerator, precision and compile."""
        return hardware_plan(self.accelerator, precision=self.precision, compile=self.compile)

    def with_overrides(self, **dotted: Any) -> TrainConfig:
        """Copy with fields replaced by dotted names (``{"optim.lr": 1e-4}``); None is skipped."""
        return validate_train_config(apply_dotted(self.model_dump(mode="json"), dotted, "training"))

    def to_yaml(self) -> str:
        """The resolved config as YAML (paths as strings)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def validate_train_config(data: dict[str, Any]) -> TrainConfig:
    """Build a `TrainConfig` from plain data; raise `ConfigError` with a one-line message."""
    return validate_model(TrainConfig, data, "training")


def load_train_config(name_or_path: str | Path = "phenn") -> TrainConfig:
    """Load a YAML config by path, or a packaged one by name ("phenn", "gru", "quick")."""
    return validate_train_config(read_yaml_mapping(name_or_path, "recon"))
