"""syre with PyTorch Lightning: one callback, checkpoints included.

    pip install 'torch-syre[lightning]'
    python examples/lightning_example.py

Trains a small MLP on a synthetic teacher-student regression with AdamW, where syre takes
over the weight decay (decay toward a fixed random anchor instead of toward 0), saves a
checkpoint, and resumes from it with a callback built with another seed: the resumed run keeps
the saved anchors.
"""
import tempfile
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional as F

from syre.data import teacher_student
from syre.integrations.lightning import SyreCallback


class Regressor(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=3e-3, weight_decay=0.1)  # syre takes this over
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=200)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def main():
    data = teacher_student(n_train=512, n_test=512, seed=0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x_train, data.y_train), batch_size=64)
    with tempfile.TemporaryDirectory() as tmp:
        common = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp)
        ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp, every_n_train_steps=80, save_top_k=-1)
        syre_cb = SyreCallback(d_spread=0.1, seed=7, verbose=True)  # gamma=None: AdamW's weight_decay
        torch.manual_seed(0)
        model = Regressor()
        pl.Trainer(max_steps=160, callbacks=[syre_cb, ckpt], **common).fit(model, loader)
        with torch.no_grad():
            test = F.mse_loss(model.net(data.x_test), data.y_test).item()
        print(f"test MSE after 160 steps: {test:.4f}")

        first = sorted(Path(tmp).glob("*step=80*.ckpt"))[0]
        resumed_cb = SyreCallback(seed=12345)  # the checkpoint's seed wins
        torch.manual_seed(0)
        pl.Trainer(max_steps=160, callbacks=[resumed_cb], **common).fit(Regressor(), loader, ckpt_path=first)
        s0, s1 = syre_cb.syres[0], resumed_cb.syres[0]
        same = all(torch.equal(s0.anchor(n).theta0, s1.anchor(n).theta0) for n in s0.names())
        print(f"resumed from {first.name}: seed {s1.seed}, same anchors as the saved run: {same}")


if __name__ == "__main__":
    main()
