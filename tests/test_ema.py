"""Tests of recon.ema: the EMA update rule and the Lightning callback's weight handling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from recon.ema import EMACallback, ModelEMA


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


@pytest.mark.parametrize("decay", [0.0, 0.5, 0.9])
def test_one_update_is_decay_old_plus_one_minus_decay_new(decay: float) -> None:
    model = _net()
    ema = ModelEMA(model, decay)
    old = [t.detach().clone() for t in [*model.parameters(), *model.buffers()]]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        model[1].running_mean.add_(1.0)  # buffers are averaged too
    new = [t.detach().clone() for t in [*model.parameters(), *model.buffers()]]
    ema.update_parameters(model)
    for got, o, n in zip(ema.tensors(), old, new, strict=True):
        if got.is_floating_point():
            assert torch.allclose(got, decay * o + (1 - decay) * n, atol=1e-6)
    # The EMA is a copy: the model itself keeps its new weights.
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), new, strict=False))


def test_ema_starts_equal_to_model_and_rejects_bad_decay() -> None:
    model = _net()
    ema = ModelEMA(model, 0.99)
    assert all(torch.equal(a, b) for a, b in zip(ema.tensors(), model.parameters(), strict=False))
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(model, 1.5)


@pytest.mark.filterwarnings("ignore:The dirpath has changed")
@pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated")
def test_callback_validates_and_saves_ema_weights(tmp_path: Path) -> None:
    pl = pytest.importorskip("lightning.pytorch")

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(2, 1)
            self.val_weights: list[torch.Tensor] = []

        def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
            return nn.functional.mse_loss(self.net(batch[0]), batch[1])

        def validation_step(self, batch: list[torch.Tensor], _: int) -> None:
            self.val_weights.append(self.net.weight.detach().clone())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    x = torch.randn(16, 2)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), 4)
    callback = EMACallback(decay=0.5)
    trainer = pl.Trainer(
        max_epochs=1,
        callbacks=[callback],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    module = Tiny()
    trainer.fit(module, data, data)
    ema_weight = callback.ema.module.net.weight
    assert callback.ema.n_averaged.item() == 1 + 4  # the initial copy + 4 optimizer steps
    # Validation ran with the EMA weights; afterwards the raw weights are back.
    assert torch.equal(module.val_weights[-1], ema_weight)
    assert not torch.equal(module.net.weight, ema_weight)
    ckpt_path = next((tmp_path / "checkpoints").glob("*.ckpt"))
    ckpt = torch.load(ckpt_path, weights_only=False)
    assert torch.equal(ckpt["state_dict"]["net.weight"], ema_weight)
    assert torch.equal(ckpt["ema_raw_state_dict"]["net.weight"], module.net.weight)

    # Resuming: the EMA restarts from the checkpoint's (EMA) weights and training
    # continues from the raw ones.
    resumed, callback2 = Tiny(), EMACallback(decay=0.5)
    trainer2 = pl.Trainer(
        max_epochs=1,
        callbacks=[callback2],
        default_root_dir=tmp_path / "resume",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    trainer2.fit(resumed, data, data, ckpt_path=ckpt_path)
    assert torch.equal(resumed.net.weight, module.net.weight)
    assert torch.equal(callback2.ema.module.net.weight, ema_weight)
