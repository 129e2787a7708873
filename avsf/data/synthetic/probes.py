"""Linear probes that check the synthetic dataset's design: sight and sound are complementary.

Cheap fixed features are extracted from one ~1.07 s window per clip (what a smoke-scale
model sees: 32 frames at 30 fps and the audio of the same span), decoded through the
project's own decoder (:func:`avsf.data.decode.decode_clip`) and log-mel
(:func:`avsf.data.audio.log_mel`):

- visual: the sprite's trajectory (centroid velocity, jitter, size change) and its
  appearance (a centroid-centred crop, averaged over the window);
- audio: log-mel (40 bins) mean, spread and peak over time, and a has-audio flag;
- both: the two concatenated.

A multinomial logistic regression is fitted on the train split and scored on the test split
(:func:`probe_dataset`). :func:`learning_curves` checks the paper's Fig. 3 in miniature: linear
probes trained epoch by epoch with SGD, each modality on the classes it alone decides (audio:
the ``sound`` classes, which word is spoken; vision: the ``motion``, ``appearance`` and
``visual`` classes): sound fits faster (two training speakers) and overfits more (held-out
clips are spoken by other speakers) than sight.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

WINDOW_FRAMES = 32  # the smoke presets' Slow 4 x tau 8 at 30 fps
AUDIO_RATE = 16000
MEL_BINS = 40
FOREGROUND = 0.65  # sprites have one channel at full brightness; backgrounds stay below ~0.5


def _crop(img: np.ndarray, *, cy: float, cx: float, half: int) -> np.ndarray:
    """A [2*half, 2*half] window of img [H,W] centred at (cy, cx), zero outside the image."""
    h, w = img.shape
    out = np.zeros((2 * half, 2 * half), dtype=np.float32)
    top, left = int(round(cy)) - half, int(round(cx)) - half
    y0, y1, x0, x1 = max(top, 0), min(top + 2 * half, h), max(left, 0), min(left + 2 * half, w)
    if y1 > y0 and x1 > x0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = img[y0:y1, x0:x1]
    return out


def visual_features(frames: np.ndarray) -> np.ndarray:
    """Trajectory and appearance features of uint8 frames [T,H,W,3]. Returns float32 [D]."""
    from avsf.data.synthetic.visuals import resize

    t, h, w, _ = frames.shape
    bright = frames.max(axis=-1).astype(np.float32) / 255.0  # [T,H,W]
    mask = bright > FOREGROUND
    ys, xs = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    area = mask.sum(axis=(1, 2)).astype(np.float32)
    safe = np.maximum(area, 1)
    cy = (mask * ys).sum(axis=(1, 2)) / safe
    cx = (mask * xs).sum(axis=(1, 2)) / safe
    dy, dx, da = np.diff(cy) / h, np.diff(cx) / h, np.diff(area) / np.maximum(area.mean(), 1)
    d2y = np.diff(dy)
    traj = np.array([dy.mean(), np.abs(dy).mean(), dy.std(), dy.max(), dy.min(), np.abs(dx).mean(),
                     np.abs(d2y).mean(), (np.abs(dy) * h < 0.3).mean(), area.std() / max(area.mean(), 1),
                     np.abs(da).mean(), area.mean() / (h * w), cy.mean() / h], dtype=np.float32)
    half = h // 4
    crops = [_crop(bright[i] * mask[i], cy=cy[i], cx=cx[i], half=half) for i in range(t) if area[i] > 0]
    mean_crop = np.mean(crops, axis=0) if crops else np.zeros((2 * half, 2 * half), np.float32)
    look = resize(mean_crop, size=12).ravel().astype(np.float32)
    return np.concatenate([traj * 10, look])


def audio_features(audio: np.ndarray | None) -> np.ndarray:
    """Log-mel statistics of mono 16 kHz audio [S] (None: no audio track). Returns float32 [3*40+1]."""
    from avsf.data.audio import log_mel

    if audio is None:
        return np.zeros(3 * MEL_BINS + 1, dtype=np.float32)
    mel = log_mel(audio, sample_rate=AUDIO_RATE, n_mels=MEL_BINS).numpy()  # [frames, mels]
    mel = np.maximum(mel, np.log(1e-6))  # digital silence would dominate the statistics
    return np.concatenate([mel.mean(0), mel.std(0), mel.max(0), [1.0]]).astype(np.float32)


def clip_features(path: str | Path, *, num_frames: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Visual and audio features of the central window of one clip."""
    from avsf.data.decode import decode_clip

    duration = WINDOW_FRAMES / fps
    start = max(0.0, (num_frames / fps - duration) / 2)
    clip = decode_clip(path, start_s=start, duration_s=duration, num_frames=WINDOW_FRAMES, audio_rate=AUDIO_RATE)
    return visual_features(clip.frames), audio_features(clip.audio if clip.has_audio else None)


def split_features(root: str | Path, split: str) -> dict[str, np.ndarray]:
    """Features of every clip of a split: {"visual": [N,Dv], "audio": [N,Da], "label": [N], "cue": [N]}."""
    root = Path(root)
    manifest = json.loads((root / "manifest.json").read_text())
    fps = manifest["spec"]["fps"]
    cues = [c["cue"] for c in manifest["classes"]]
    vis, aud, labels = [], [], []
    for clip in manifest["clips"]:
        if clip["split"] != split:
            continue
        v, a = clip_features(root / clip["path"], num_frames=clip["num_frames"], fps=fps)
        vis.append(v)
        aud.append(a)
        labels.append(clip["label"])
    labels = np.asarray(labels)
    return {"visual": np.stack(vis), "audio": np.stack(aud), "label": labels,
            "cue": np.asarray([cues[k] for k in labels])}


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, *, num_classes: int, weight_decay: float = 1e-3,
              steps: int = 300, seed: int = 0) -> torch.nn.Module:
    """Multinomial logistic regression on standardised features (full-batch L-BFGS)."""
    torch.manual_seed(seed)
    x = torch.as_tensor(x_train, dtype=torch.float32)
    mean, std = x.mean(0), x.std(0) + 1e-4
    linear = torch.nn.Linear(x.shape[1], num_classes)
    model = torch.nn.Sequential(_Standardise(mean, std), linear)
    y = torch.as_tensor(y_train, dtype=torch.int64)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model.eval()


class _Standardise(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-sample correctness (bool [N])."""
    with torch.no_grad():
        pred = model(torch.as_tensor(x, dtype=torch.float32)).argmax(1).numpy()
    return pred == y


def probe_dataset(root: str | Path, *, train_split: str = "train", test_split: str = "test") -> dict:
    """Fit visual, audio and both probes on `train_split`; top-1 on both splits, overall and per cue."""
    return probe_features(split_features(root, train_split), split_features(root, test_split))


def probe_features(train: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> dict:
    """:func:`probe_dataset` on features already extracted by :func:`split_features`."""
    num_classes = int(max(train["label"].max(), test["label"].max())) + 1
    result: dict = {}
    for name in ("visual", "audio", "both"):
        def pick(d):
            return np.concatenate([d["visual"], d["audio"]], axis=1) if name == "both" else d[name]
        model = fit_probe(pick(train), train["label"], num_classes=num_classes)
        ok_test = accuracy(model, pick(test), test["label"])
        result[name] = {
            "train_top1": float(accuracy(model, pick(train), train["label"]).mean()),
            "test_top1": float(ok_test.mean()),
            "test_top1_per_cue": {c: float(ok_test[test["cue"] == c].mean()) for c in sorted(set(test["cue"]))},
        }
    return result


# (modality, the cues whose classes it is probed on): the classes each modality alone decides
FIG3_TASKS = (("audio", ("sound",)), ("visual", ("motion", "appearance", "visual")))


def learning_curves(train: dict[str, np.ndarray], test: dict[str, np.ndarray], *, epochs: int = 8,
                    batch_size: int = 8, lr: float = 0.05, seed: int = 0,
                    tasks: tuple[tuple[str, str | tuple[str, ...]], ...] = FIG3_TASKS) -> dict:
    """Per-epoch train and test top-1 of a linear probe per (modality, cues) task (Fig. 3 in miniature).

    Each probe sees only the classes of its cues and only clips with an audio track (a silent
    clip says nothing to the audio probe). Features are standardised on the training clips;
    plain minibatch SGD, so an epoch is an epoch. `test` may be any held-out features (val and
    test together give more clips).
    Returns {modality: {"cue", "train_top1": [epochs], "test_top1": [epochs], "gap": last train - test}}.
    """
    result = {}
    for modality, cue in tasks:
        cues = [cue] if isinstance(cue, str) else list(cue)
        keep_tr = np.isin(train["cue"], cues) & (train["audio"][:, -1] > 0)
        keep_te = np.isin(test["cue"], cues) & (test["audio"][:, -1] > 0)
        x_tr = torch.as_tensor(train[modality][keep_tr], dtype=torch.float32)
        x_te = torch.as_tensor(test[modality][keep_te], dtype=torch.float32)
        mean, std = x_tr.mean(0), x_tr.std(0) + 1e-4
        x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
        classes = sorted(set(train["label"][keep_tr].tolist()))
        index = {c: i for i, c in enumerate(classes)}
        y_tr = torch.as_tensor([index[c] for c in train["label"][keep_tr]])
        y_te = torch.as_tensor([index.get(c, -1) for c in test["label"][keep_te]])
        torch.manual_seed(seed)
        linear = torch.nn.Linear(x_tr.shape[1], len(classes))
        opt = torch.optim.SGD(linear.parameters(), lr=lr)
        order = torch.Generator().manual_seed(seed)
        curve_tr, curve_te = [], []
        for _ in range(epochs):
            perm = torch.randperm(len(y_tr), generator=order)
            for start in range(0, len(y_tr), batch_size):
                batch = perm[start:start + batch_size]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(linear(x_tr[batch]), y_tr[batch]).backward()
                opt.step()
            with torch.no_grad():
                curve_tr.append(float((linear(x_tr).argmax(1) == y_tr).float().mean()))
                curve_te.append(float((linear(x_te).argmax(1) == y_te).float().mean()))
        result[modality] = {"cue": cue, "train_top1": curve_tr, "test_top1": curve_te,
                            "gap": curve_tr[-1] - curve_te[-1]}
    return result
