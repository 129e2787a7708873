"""Log-mel: the paper's settings, checked against librosa; mono mixing and resampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from media_helpers import write_clip

from avsf.data.audio import clip_logmel, log_mel, resize_time
from avsf.data.decode import decode_clip


def test_log_mel_matches_librosa_with_the_paper_settings():
    import librosa

    rng = np.random.default_rng(0)
    t = np.arange(34133) / 16000  # one 4x16 clip: 2.133 s at 16 kHz
    y = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    ours = log_mel(y, sample_rate=16000, n_fft=512, hop_length=256, n_mels=80).numpy()
    ref = np.log(librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, hop_length=256, win_length=512,
                                                n_mels=80, htk=True, center=False, power=2.0) + 1e-8).T
    assert ours.shape == ref.shape == (1 + (34133 - 512) // 256, 80)
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_clip_logmel_resamples_time_and_normalises():
    y = np.random.default_rng(1).standard_normal(17066).astype(np.float32) * 0.1
    raw = log_mel(y, n_mels=40)
    out = clip_logmel(y, sample_rate=16000, n_fft=512, hop_length=256, n_mels=40, frames=64, mean=-7.03, std=4.66)
    assert out.shape == (1, 64, 40)
    # normalisation is (x - mean) / std of the time-resized raw log-mel
    expected = (resize_time(raw, frames=64) - (-7.03)) / 4.66
    torch.testing.assert_close(out[0], expected)
    # no audio: zeros (the mean of the normalised input)
    silent = clip_logmel(None, sample_rate=16000, n_fft=512, hop_length=256, n_mels=40, frames=64, mean=-7.03, std=4.66)
    assert silent.shape == (1, 64, 40) and silent.abs().max() == 0


def test_resize_time_is_linear_interpolation():
    x = torch.arange(10, dtype=torch.float32).repeat(3, 1).T  # [10, 3], value = time index
    y = resize_time(x, frames=5)
    assert y.shape == (5, 3)
    assert torch.all(y[1:, 0] > y[:-1, 0])  # order kept
    assert resize_time(x, frames=10) is x


@pytest.mark.parametrize("rate,channels", [(44100, 2), (48000, 6), (22050, 1)])
def test_decoded_audio_is_mono_16k_with_the_tone_in_place(tmp_path, rate, channels):
    # a 1 kHz burst at 0.5 s in every channel: after mixing and resampling, its energy sits in
    # the mel bin of 1 kHz and at the right time
    path = write_clip(tmp_path / "tone.mkv", seconds=1.5, sample_rate=rate, channels=channels, audio_codec="flac",
                      burst_at=0.5)
    clip = decode_clip(path, start_s=0.0, duration_s=1.0, num_frames=1, audio_rate=16000, want_video=False)
    assert clip.audio.shape == (16000,)
    lm = log_mel(clip.audio, n_mels=80)
    frame = int(0.51 * 16000 - 256) // 256
    peak_bin = int(lm[frame].argmax())
    hz = 700.0 * (10 ** (np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 82) / 2595) - 1)  # HTK mel scale
    mel_freqs = hz[1:-1]  # centres of the 80 triangles
    assert abs(mel_freqs[peak_bin] - 1000) < 120
    assert lm[:10].max() < -15  # silence before the burst: log(1e-8) territory
