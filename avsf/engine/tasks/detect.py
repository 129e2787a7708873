"""Detection (``model.task = "detect"``, AVA, appendix A.7): actions per person box.

A detector is trained as a multi-label classifier of its boxes (sigmoid head, BCE per box: the
classification task's loss on ``"logits"`` [R,K] against ``"label"`` [R,K]). It is tested per
box and keyframe instead of per view: every box of every keyframe of the split is scored and
frame-level AP at IoU 0.5 computed against the dataset's ground truth
(:func:`avsf.engine.ava_eval.frame_ap`). Its FLOPs are counted at the test short side x 1.25
(the paper's 256 x 320).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from avsf.config import DataConfig
from avsf.engine.ava_eval import frame_ap
from avsf.engine.tasks.base import evaluation_batches, gather_rows
from avsf.engine.tasks.classify import ClassificationTask
from avsf.errors import UserError


class DetectionTask(ClassificationTask):
    name = "detect"

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset: Any, *, device: torch.device, rank: int = 0,
                 world_size: int = 1) -> dict[str, Any]:
        """Frame AP of every scored box of an AVA dataset (its ``keyframes``, ``groundtruth``,
        ``excluded``). Returns {"map", "per_class_ap" {class name: AP %, classes with ground
        truth only}, "num_videos", "views_per_video", "num_keyframes", "num_boxes"}."""
        rows = [{"scores": outputs["logits"].float().sigmoid().cpu(), "item": batch["box_item"].cpu(),
                 "slot": batch["box_slot"].cpu()}
                for batch, outputs in evaluation_batches(model, dataset, task=self, device=device, rank=rank,
                                                         world_size=world_size)]
        merged = gather_rows(rows)
        if not merged:
            raise UserError("the AVA evaluation split has no box to score")
        seen: set[tuple[int, int]] = set()  # a sharded loader may repeat items to pad ranks
        detections = []
        for scores, item, slot in zip(merged["scores"].numpy(), merged["item"].tolist(), merged["slot"].tolist()):
            if (item, slot) in seen:
                continue
            seen.add((item, slot))
            kf = dataset.keyframes[item]
            key, box = (kf.video, kf.timestamp), tuple(float(x) for x in kf.boxes[slot])
            detections += [(key, c, float(s), box) for c, s in enumerate(scores)]
        k = len(dataset.class_names)
        mean_ap, aps = frame_ap(detections, dataset.groundtruth, classes=range(k), excluded=dataset.excluded)
        return {"map": mean_ap, "per_class_ap": {dataset.class_names[c]: 100.0 * ap for c, ap in aps.items()},
                "num_videos": len({kf.video for kf in dataset.keyframes}), "views_per_video": 1,
                "num_keyframes": len({item for item, _ in seen}), "num_boxes": len(seen)}

    def cost_input_size(self, data: DataConfig) -> tuple[int, int | None]:
        side = data.test_short_side
        return side, int(round(side * 1.25))
