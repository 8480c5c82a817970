"""syre with the Hugging Face Trainer: one callback, the Trainer's weight decay and schedule.

    pip install 'torch-syre[transformers]'
    python examples/transformers_example.py

Builds a tiny BERT from a config (nothing is downloaded), trains it on a synthetic sequence
classification task with the Trainer's AdamW, linear schedule and ``weight_decay=0.05``, which
syre takes over (biases and LayerNorm weights stay undecayed, as the Trainer groups them), then
resumes from the first checkpoint with a callback built with another seed: the anchors are the
saved ones.
"""
import tempfile
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments, set_seed

from syre.integrations.transformers import SyreCallback


class Majority(torch.utils.data.Dataset):
    """Sequences of 12 tokens from {0, ..., 7}; the label says whether most tokens are below 4."""

    def __init__(self, n=512, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 8, (n, 12), generator=g)
        self.labels = ((self.ids < 4).sum(dim=1) > 6).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def model():
    set_seed(0)
    config = BertConfig(vocab_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=16, num_labels=2)
    return BertForSequenceClassification(config)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=32, max_steps=48, learning_rate=3e-3, weight_decay=0.05,
            lr_scheduler_type="linear", warmup_steps=8, save_strategy="steps", save_steps=24, report_to="none",
            logging_strategy="no", disable_tqdm=True, use_cpu=True, seed=0,
        )
        cb = SyreCallback(d_spread=0.1, seed=3)  # gamma=None: the Trainer's weight_decay, group by group
        trainer = Trainer(model=model(), args=args, train_dataset=Majority(), callbacks=[cb])
        out = trainer.train()
        rows = [r for r in cb.syre.coverage() if r["covered"]]
        print(f"syre pulls {sum(r['gamma'] > 0 for r in rows)} of {len(rows)} tensors toward their anchors "
              f"(gamma = {max(r['gamma'] for r in rows)}); biases and LayerNorm weights get gamma = 0, as the Trainer groups them")
        print(f"train loss: {out.training_loss:.4f}")

        resumed = SyreCallback(seed=999)
        Trainer(model=model(), args=args, train_dataset=Majority(), callbacks=[resumed]).train(
            resume_from_checkpoint=str(Path(tmp) / "checkpoint-24"))
        same = all(torch.equal(cb.syre.anchor(n).theta0, resumed.syre.anchor(n).theta0) for n in cb.syre.names())
        print(f"resumed from checkpoint-24: seed {resumed.syre.seed}, same anchors: {same}")


if __name__ == "__main__":
    main()
