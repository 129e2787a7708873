"""Log-mel spectrogram with the paper's settings, computed by torchaudio.

16 kHz mono in; n_fft = win = 512 (32 ms), hop 256 (16 ms), HTK mel scale with Slaney area
normalisation (librosa's defaults with ``htk=True``, as the authors' ``gen_logmel`` calls it),
power spectrum, no centring, ``log(S + 1e-8)``. The result spans exactly the waveform given
(the clip's time span), is resampled in time to the preset's frame count and normalised.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

LOG_EPS = 1e-8


@lru_cache(maxsize=8)
def _mel_transform(sample_rate: int, n_fft: int, hop_length: int, n_mels: int):
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate, n_fft=n_fft, win_length=n_fft, hop_length=hop_length,
        n_mels=n_mels, f_min=0.0, f_max=sample_rate / 2, power=2.0, center=False,
        norm="slaney", mel_scale="htk", window_fn=torch.hann_window)


def log_mel(waveform: np.ndarray | torch.Tensor, *, sample_rate: int = 16000, n_fft: int = 512,
            hop_length: int = 256, n_mels: int = 80) -> torch.Tensor:
    """Raw log-mel of a mono waveform.

    Args:
        waveform: float [S] mono samples at `sample_rate`; S >= n_fft (shorter input is
            zero-padded to one window).
    Returns:
        float32 [frames, n_mels] with frames = 1 + (S - n_fft) // hop_length (time x mel).
    """
    x = torch.as_tensor(waveform, dtype=torch.float32)
    if x.ndim != 1:
        raise ValueError(f"log_mel wants a mono waveform [S]; got shape {list(x.shape)}")
    if x.shape[0] < n_fft:
        x = F.pad(x, (0, n_fft - x.shape[0]))
    spec = _mel_transform(sample_rate, n_fft, hop_length, n_mels)(x)  # [n_mels, frames]
    return torch.log(spec + LOG_EPS).T.contiguous()


def resize_time(logmel: torch.Tensor, *, frames: int) -> torch.Tensor:
    """Linearly resample [T, F] along time to [frames, F]."""
    if logmel.shape[0] == frames:
        return logmel
    x = logmel.T.unsqueeze(0)  # [1, F, T]
    return F.interpolate(x, size=frames, mode="linear", align_corners=False)[0].T.contiguous()


def clip_logmel(waveform: np.ndarray | None, *, sample_rate: int, n_fft: int, hop_length: int,
                n_mels: int, frames: int, mean: float, std: float) -> torch.Tensor:
    """The network's audio input for one clip: [1, frames, n_mels], normalised.

    `waveform` is the clip's whole span at `sample_rate` (float [S]); None (a file without
    audio) gives zeros, the normalised value of an average log-mel.
    """
    if waveform is None:
        return torch.zeros(1, frames, n_mels)
    lm = log_mel(waveform, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
    lm = resize_time(lm, frames=frames)
    return ((lm - mean) / std).unsqueeze(0)
