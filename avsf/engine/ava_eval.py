"""Frame-level AP at IoU 0.5, as the official AVA evaluation computes it
(ActivityNet's ``get_ava_performance.py`` on the TF object-detection PASCAL evaluator). The
detector's test pass that feeds it is :class:`avsf.engine.tasks.detect.DetectionTask`.

Per class, per frame (``(video_id, timestamp)``): the frame's detections of the class are
taken in descending score order (the official code takes them in the order of the
detections file: no sort since its per-image NMS step was dropped; the two agree when the
file lists a frame's boxes by score, and sorting makes the result independent of the
order); each is matched to the ground-truth box of the class with the highest IoU in that
frame; it is a true positive when that IoU is >= 0.5 and that box is
not yet matched (the box is then marked matched), else a false positive (as the official
code: a detection whose best box is already taken does not fall back to another box).
Detections on frames without ground truth are false positives. Then over all frames:
detections sorted by score (descending; ties keep their input order - the official code's
unstable sort leaves them in any order), precision and recall at every cut, and the PASCAL
VOC all-point interpolated AP (precision made monotone from the right, summed over the
recall steps). mAP = mean over the classes with at least one ground-truth box. Frames in the
excluded-timestamps list and classes outside the label map are removed first. IoU uses area
= width x height (no +1), as ``np_box_ops``.

Checked against PySlowFast's copy of the official evaluator (``ava_evaluation/``,
PascalDetectionEvaluator) on 12 random cases of 30 frames x 5 classes, detections listed by
score: the same mAP to 1e-9 (not part of the tests: the reference code is not a dependency).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import numpy as np

from avsf.data.boxes import iou

Key = tuple[str, int]
Box = tuple[float, float, float, float]


def voc_average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """PASCAL VOC all-point interpolated AP from precision/recall at each detection cut."""
    if len(precision) == 0:
        return 0.0
    p = np.concatenate([[0.0], precision, [0.0]])
    r = np.concatenate([[0.0], recall, [1.0]])
    for i in range(len(p) - 2, -1, -1):
        p[i] = max(p[i], p[i + 1])
    steps = np.flatnonzero(r[1:] != r[:-1]) + 1
    return float(np.sum((r[steps] - r[steps - 1]) * p[steps]))


def frame_ap(detections: Iterable[tuple[Key, int, float, Box]], groundtruth: Iterable[tuple[Key, int, Box]], *,
             classes: Iterable[int], excluded: set[Key] = frozenset(), iou_threshold: float = 0.5
             ) -> tuple[float, dict[int, float]]:
    """(mAP in percent, {class: AP in [0, 1]}) over the classes with ground truth.

    Args:
        detections: rows (frame key, class, score, box x1,y1,x2,y2).
        groundtruth: rows (frame key, class, box).
        classes: the evaluated classes (the label map's); rows of other classes are dropped.
        excluded: frame keys left out of the evaluation.
    """
    classes = list(classes)
    wanted = set(classes)
    gt: dict[int, dict[Key, list[Box]]] = defaultdict(lambda: defaultdict(list))
    for key, c, box in groundtruth:
        if c in wanted and key not in excluded:
            gt[c][key].append(box)
    det: dict[int, dict[Key, list[tuple[float, Box]]]] = defaultdict(lambda: defaultdict(list))
    for key, c, score, box in detections:
        if c in wanted and key not in excluded:
            det[c][key].append((float(score), box))
    aps: dict[int, float] = {}
    for c in classes:
        num_gt = sum(len(v) for v in gt[c].values())
        if num_gt == 0:
            continue  # AP undefined (the official code reports nan and leaves it out of the mean)
        scores, tps = [], []
        for key, rows in det[c].items():
            order = sorted(range(len(rows)), key=lambda i: -rows[i][0])
            rows = [rows[i] for i in order]
            s = np.array([r[0] for r in rows])
            tp = np.zeros(len(rows), dtype=bool)
            gt_boxes = gt[c].get(key, [])
            if gt_boxes:
                ov = iou(np.array([r[1] for r in rows]), np.array(gt_boxes))
                best = ov.argmax(1)
                taken = np.zeros(len(gt_boxes), dtype=bool)
                for i in range(len(rows)):
                    g = best[i]
                    if ov[i, g] >= iou_threshold and not taken[g]:
                        tp[i] = taken[g] = True
            scores.append(s)
            tps.append(tp)
        if scores:
            s, tp = np.concatenate(scores), np.concatenate(tps)
            order = np.argsort(-s, kind="stable")
            tp = tp[order].astype(np.float64)
            ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
            aps[c] = voc_average_precision(ctp / (ctp + cfp), ctp / num_gt)
        else:
            aps[c] = 0.0
    if not aps:
        raise ValueError("no evaluated class has a ground-truth box: frame AP is undefined")
    return 100.0 * float(np.mean(list(aps.values()))), aps
