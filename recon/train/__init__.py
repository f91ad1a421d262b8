"""Training: config, data, the LightningModule, the run folder; distillation; the benchmark.

    from recon.train import load_train_config, train
    run_dir = train(load_train_config("quick").with_overrides(arch="gru"))

Lightning is imported by `recon.train.run` and `recon.train.module`, never by the
inference path (`recon.models`, `recon.estimators`).
"""

from recon.train.config import TrainConfig, load_train_config, validate_train_config
from recon.train.data import DatasetMismatchError, TrainData, load_data
from recon.train.module import LitRecon, NonFiniteLossError
from recon.train.run import fit_run, train

__all__ = [
    "DatasetMismatchError",
    "LitRecon",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainData",
    "fit_run",
    "load_data",
    "load_train_config",
    "train",
    "validate_train_config",
]
