"""Test-time metrics against brute-force computations (and sklearn for average precision)."""

import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from avsf.engine import metrics as M
from avsf.engine.tasks.classify import summarize


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_view_averaging_and_max_per_video():
    scores = _rand(12, 5)
    video = torch.tensor([3, 1, 3, 1, 7, 3, 1, 7, 7, 3, 1, 7])  # 4 views each, shuffled
    videos, mean = M.aggregate_views(scores, video, reduce="mean")
    _, mx = M.aggregate_views(scores, video, reduce="max")
    assert videos.tolist() == [1, 3, 7]
    for row, v in enumerate(videos.tolist()):
        rows = scores[video == v].double()
        assert torch.allclose(mean[row], rows.mean(0))
        assert torch.equal(mx[row], rows.max(0).values)


def test_topk_against_a_loop():
    scores = _rand(50, 7, seed=1)
    labels = torch.randint(0, 7, (50,), generator=torch.Generator().manual_seed(2))
    acc = M.topk_accuracy(scores, labels, ks=(1, 5))
    for k in (1, 5):
        manual = sum(int(labels[i]) in scores[i].argsort(descending=True)[:k].tolist() for i in range(50))
        assert acc[f"top{k}"] == pytest.approx(100.0 * manual / 50)
    # k larger than the class count is capped: everything is within the top 10 of 7 classes
    assert M.topk_accuracy(scores, labels, ks=(10,))["top10"] == 100.0


def test_average_precision_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for trial in range(20):
        scores = rng.integers(0, 6, size=40).astype(float)  # many ties
        pos = rng.random(40) < 0.3
        pos[trial % 40] = True
        assert M.average_precision(scores, pos) == pytest.approx(average_precision_score(pos, scores))


def test_map_skips_classes_without_positives():
    scores = _rand(30, 4, seed=3)
    targets = (_rand(30, 4, seed=4) > 0.6).float()
    targets[:, 2] = 0  # class 2 never occurs
    value, aps = M.mean_average_precision(scores, targets)
    assert sorted(aps) == [c for c in range(4) if c != 2]
    expected = np.mean([average_precision_score(targets[:, c].numpy(), scores[:, c].numpy()) for c in aps])
    assert value == pytest.approx(100 * expected)
    with pytest.raises(ValueError, match="no class"):
        M.mean_average_precision(scores, torch.zeros(30, 4))


def test_action_accuracy_against_brute_force():
    n, v, m = 20, 4, 5
    verb_s, noun_s = _rand(n, v, seed=5).softmax(1), _rand(n, m, seed=6).softmax(1)
    verbs = torch.randint(0, v, (n,), generator=torch.Generator().manual_seed(7))
    nouns = torch.randint(0, m, (n,), generator=torch.Generator().manual_seed(8))
    got = M.action_topk_accuracy(verb_s, noun_s, verbs, nouns, ks=(1, 5), chunk=7)
    for k in (1, 5):
        hits = 0
        for i in range(n):
            pairs = sorted(itertools.product(range(v), range(m)), key=lambda p: -float(verb_s[i, p[0]] * noun_s[i, p[1]]))
            hits += (int(verbs[i]), int(nouns[i])) in pairs[:k]
        assert got[f"top{k}"] == pytest.approx(100.0 * hits / n)


def test_confusion_matrix_and_per_class_accuracy():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    preds = torch.tensor([0, 1, 1, 1, 0, 2])
    cm = M.confusion_matrix(preds, labels, num_classes=4)
    assert cm.tolist() == [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert M.per_class_accuracy(cm) == [50.0, pytest.approx(200 / 3), 100.0, None]


def test_summarize_softmax_sigmoid_and_epic():
    vid = torch.tensor([0, 0, 1, 1, 2, 2])
    view = torch.tensor([0, 1, 0, 1, 0, 1])
    scores = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1],
                           [0.1, 0.1, 0.8], [0.2, 0.2, 0.6],
                           [0.5, 0.4, 0.1], [0.5, 0.4, 0.1]])
    label = torch.tensor([1, 1, 2, 2, 1, 1])
    out = summarize({"video_index": vid, "view_index": view, "scores": scores, "label": label}, head="softmax",
                    class_names=["a", "b", "c"])
    # video 0 averages to [0.4, 0.5, 0.1] -> b (right); video 1 -> c (right); video 2 -> a (wrong)
    assert out["top1"] == pytest.approx(200 / 3)
    assert out["num_videos"] == 3 and out["views_per_video"] == 2
    assert out["per_class_accuracy"] == {"a": None, "b": 50.0, "c": 100.0}
    assert out["confusion_matrix"][1] == [1, 1, 0]
    multi = torch.tensor([[1.0, 0, 0]] * 2 + [[0, 1.0, 1.0]] * 2 + [[0, 0, 1.0]] * 2)
    sig = summarize({"video_index": vid, "view_index": view, "scores": scores, "label": multi}, head="sigmoid")
    _, mx = M.aggregate_views(scores, vid, reduce="max")
    expected, _ = M.mean_average_precision(mx, multi[::2])
    assert sig["map"] == pytest.approx(expected)
    epic = summarize({"video_index": vid, "view_index": view, "verb_scores": scores, "noun_scores": scores,
                      "verb": label, "noun": label}, head="epic")
    assert epic["verb_top1"] == pytest.approx(200 / 3) and epic["noun_top1"] == pytest.approx(200 / 3)
    # same scores for verb and noun: the best pair is (best, best), so action = verb accuracy here
    assert epic["action_top1"] == pytest.approx(200 / 3)
