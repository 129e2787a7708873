"""Test-time metrics: per-video view aggregation, top-k, mAP, EPIC action accuracy, the
confusion matrix and per-class accuracy. Plain tensors in, plain numbers out."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def aggregate_views(scores: Tensor, video_index: Tensor, *, reduce: str = "mean") -> tuple[Tensor, Tensor]:
    """Combine the view scores of each video.

    Args:
        scores: [M, K] per-view probabilities (softmax or sigmoid), any order.
        video_index: [M] int64, the video each row belongs to.
        reduce: ``"mean"`` (single-label: average softmax) or ``"max"`` (multi-label).
    Returns:
        (videos [V] sorted unique video indices, video_scores [V, K]).
    """
    if scores.ndim != 2 or video_index.shape != scores.shape[:1]:
        raise ValueError(f"scores {tuple(scores.shape)} and video_index {tuple(video_index.shape)} do not match")
    videos, inverse = torch.unique(video_index, sorted=True, return_inverse=True)
    k = scores.shape[1]
    idx = inverse.unsqueeze(1).expand(-1, k)
    scores = scores.double()
    if reduce == "mean":
        out = torch.zeros(len(videos), k, dtype=torch.float64).scatter_add_(0, idx, scores)
        counts = torch.bincount(inverse, minlength=len(videos)).to(out.dtype)
        out = out / counts.unsqueeze(1)
    elif reduce == "max":
        out = torch.full((len(videos), k), -torch.inf, dtype=torch.float64).scatter_reduce_(
            0, idx, scores, reduce="amax", include_self=True)
    else:
        raise ValueError(f"reduce={reduce!r}; choose mean or max")
    return videos, out


def topk_correct(scores: Tensor, labels: Tensor, *, k: int) -> Tensor:
    """[N] bool: the label is among the k highest scores (k is capped at the class count)."""
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return (top == labels.unsqueeze(1)).any(1)


def topk_accuracy(scores: Tensor, labels: Tensor, *, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """{"top1": %, "top5": %} of single-label `scores` [N,K] against `labels` [N], in percent."""
    n = max(len(labels), 1)
    return {f"top{k}": 100.0 * int(topk_correct(scores, labels, k=k).sum()) / n for k in ks}


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the precision-recall curve, one class: sum over distinct score thresholds of
    (recall step) x precision, as sklearn's ``average_precision_score`` (ties count together)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positives[order].astype(np.float64)
    tp = np.cumsum(y)
    # the last index of each run of equal scores is a threshold
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp_at, n_at = tp[last], last + 1.0
    precision = tp_at / n_at
    recall = tp_at / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(scores: Tensor, targets: Tensor) -> tuple[float, dict[int, float]]:
    """mAP (percent) over the classes with at least one positive, and each such class's AP.

    Args:
        scores: [N, K] per-video scores; targets: [N, K] multi-hot (nonzero = positive).
    """
    s, t = scores.double().numpy(), (targets > 0).numpy()
    aps = {c: average_precision(s[:, c], t[:, c]) for c in range(t.shape[1]) if t[:, c].any()}
    if not aps:
        raise ValueError("no class has a positive example: mAP is undefined")
    return 100.0 * float(np.mean(list(aps.values()))), aps


def action_topk_accuracy(verb_scores: Tensor, noun_scores: Tensor, verbs: Tensor, nouns: Tensor, *,
                         ks: tuple[int, ...] = (1, 5), chunk: int = 256) -> dict[str, float]:
    """EPIC action accuracy (percent): an action (verb, noun) scores p(verb) * p(noun); a video is
    right at k when its true pair is among the k highest-scoring pairs.

    Args: verb_scores [N,V], noun_scores [N,M] probabilities; verbs, nouns [N] int64.
    """
    hits = {k: 0 for k in ks}
    num_nouns = noun_scores.shape[1]
    for start in range(0, len(verbs), chunk):
        sl = slice(start, start + chunk)
        pair = (verb_scores[sl].double().unsqueeze(2) * noun_scores[sl].double().unsqueeze(1)).flatten(1)
        target = verbs[sl] * num_nouns + nouns[sl]
        for k in ks:
            hits[k] += int(topk_correct(pair, target, k=k).sum())
    return {f"top{k}": 100.0 * hits[k] / max(len(verbs), 1) for k in ks}


def confusion_matrix(predictions: Tensor, labels: Tensor, *, num_classes: int) -> Tensor:
    """[K, K] int64 counts, rows = true class, columns = predicted class."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(confusion: Tensor) -> list[float | None]:
    """Per true class: percent of its videos predicted right (None for a class with no video)."""
    totals = confusion.sum(1)
    diag = confusion.diagonal()
    return [None if int(n) == 0 else 100.0 * int(d) / int(n) for d, n in zip(diag, totals)]
