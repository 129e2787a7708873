"""Throwaway model and data parts that follow docs/INTERFACES.md, for engine tests that must
not depend on the real model and data (and must run in well under a second)."""

from __future__ import annotations

import torch
from torch import nn

from avsf.config import RunConfig


class TinyVideoNet(nn.Module):
    """Conv3d + BN + dropout + linear over "slow" [N,3,T,H,W]; an audio linear branch whose
    contribution ``drop_audio`` zeroes. Returns {"logits": [N,K]}."""

    def __init__(self, *, num_classes: int, batch_norm: bool = True, width: int = 4, dropout: float = 0.3) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, width, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm3d(width) if batch_norm else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.audio = nn.Linear(4, width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, batch: dict[str, torch.Tensor], *, drop_audio: bool | None = None) -> dict[str, torch.Tensor]:
        x = torch.relu(self.bn(self.conv(batch["slow"]))).mean((2, 3, 4))
        a = self.audio(batch["audio"].mean((1, 3))[:, :4])
        gate = 0.0 if (drop_audio and self.training) else 1.0
        return {"logits": self.fc(self.drop(x + gate * a))}


class TinyDataset(torch.utils.data.Dataset):
    """Learnable toy clips: the class sets the mean of the frames. `views` items per video
    for val/test, one per video for train."""

    def __init__(self, *, num_videos: int = 24, num_classes: int = 3, views: int = 1, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(num_videos) % num_classes
        self.noise = torch.randn(num_videos, views, 3, 2, 6, 6, generator=g)
        self.audio = torch.randn(num_videos, views, 1, 8, 4, generator=g)
        self.num_classes, self.num_videos, self.views = num_classes, num_videos, views
        self.class_names = [f"class{c}" for c in range(num_classes)]
        self.epochs_seen: list[tuple[int, int]] = []

    def set_epoch(self, epoch: int, total_epochs: int) -> None:
        self.epochs_seen.append((epoch, total_epochs))

    def __len__(self) -> int:
        return self.num_videos * self.views

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        v, w = divmod(i, self.views)
        label = self.labels[v]
        return {"slow": self.noise[v, w] + label.float(), "audio": self.audio[v, w], "label": label,
                "video_index": torch.tensor(v), "view_index": torch.tensor(w)}


def tiny_loader(dataset, *, batch_size: int, num_workers: int = 0, shuffle: bool, seed: int, epoch: int,
                rank: int = 0, world_size: int = 1, drop_last: bool, start_batch: int = 0) -> list[dict]:
    """The loader contract: order from (seed, epoch), sharded by rank, `start_batch` skipped."""
    n = len(dataset)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch)) if shuffle else torch.arange(n)
    per_rank = n // world_size if drop_last else -(-n // world_size)
    order = torch.cat([order, order[: per_rank * world_size - n]]) if per_rank * world_size > n else order
    mine = order[rank * per_rank:(rank + 1) * per_rank]
    batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    if drop_last:
        batches = [b for b in batches if len(b) == batch_size]
    return [torch.utils.data.default_collate([dataset[int(i)] for i in b]) for b in batches[start_batch:]]


def install(monkeypatch, *, views: int = 2, num_videos: int = 24, batch_norm: bool = True) -> dict:
    """Route avsf.engine.runtime's builders to the fakes; returns the datasets it builds."""
    from avsf.engine import runtime

    made: dict = {}

    def build_dataset(cfg: RunConfig, split: str):
        ds = TinyDataset(num_videos=num_videos, views=1 if split == "train" else views,
                         seed={"train": 0, "val": 1, "test": 2}[split])
        made[split] = ds
        return ds

    monkeypatch.setattr(runtime, "build_dataset", build_dataset)
    monkeypatch.setattr(runtime, "build_loader", tiny_loader)
    monkeypatch.setattr(runtime, "build_model",
                        lambda cfg: TinyVideoNet(num_classes=cfg.model.num_classes, batch_norm=batch_norm,
                                                 dropout=cfg.model.dropout))
    import avsf.engine.evaluate as ev

    monkeypatch.setattr(ev, "compute_cost", lambda cfg: {"params": 1, "gflops": 0.5, "views": 2,
                                                         "gflops_x_views": "0.50 x 2", "gflops_total": 1.0})
    return made


def tiny_config(**overrides) -> RunConfig:
    from avsf.presets import get_preset

    base = {"solver.epochs": 3, "solver.batch_size": 4, "solver.reference_batch": 4, "solver.warmup_epochs": 1,
            "data.num_workers": 0, "checkpoint_every": 2, "keep_checkpoints": 3, "log_every": 1}
    base.update(overrides)
    return get_preset("slowfast_tiny").with_overrides({k: v for k, v in base.items()})
