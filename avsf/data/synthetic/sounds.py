"""Sounds for the built-in synthetic dataset, deterministic from an rng.

Two families:

- procedural sounds (numpy only): impacts, tones, chirps, hums and backgrounds, each drawn
  with a :class:`Voice` (pitch, decay and brightness factors). Training clips use
  :data:`TRAIN_VOICES`, validation and test clips :data:`HELDOUT_VOICES`;
- spoken words (:func:`spoken`, words :data:`WORDS`), synthesised offline by eSpeak NG
  (:mod:`avsf.data.synthetic.speech`). Training clips are spoken by :data:`TRAIN_SPEAKERS`,
  validation and test clips by :data:`HELDOUT_SPEAKERS`, other speakers altogether.

Either way the same sound classes are made by other sources at test time: a train/test shift
in the sound that punishes an audio pathway for memorising its training set.

All functions return float32 mono waveforms [S] in about [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Voice:
    """Timbre of a sound source: multiplies the pitch, decay times and spectral brightness."""

    pitch: float
    decay: float
    bright: float


TRAIN_VOICES = (Voice(0.80, 1.0, 1.0), Voice(0.95, 0.8, 1.2), Voice(1.10, 1.2, 0.9), Voice(1.30, 1.0, 1.1))
# held-out voices lie between the training ones: other voices, not out-of-range ones, so the
# shift hurts a model that memorised its training voices but not one that learned the sounds
HELDOUT_VOICES = (Voice(0.87, 0.9, 1.05), Voice(1.02, 1.1, 1.0), Voice(1.20, 1.0, 1.0))
TRAIN_BACKGROUNDS = ("noise", "wind")  # class-irrelevant background sound heard in training
HELDOUT_BACKGROUNDS = ("chatter", "music")  # other backgrounds at validation / test time
# spoken words: eSpeak NG voices (language + variant). Two training speakers, both male voices:
# little variety, quick to fit; the held-out speakers are two female voices and an American
# accent, a shift that a model which memorised its training speakers pays for (the paper's
# Fig. 3; tests/test_synthetic.py checks it)
WORDS = ("open", "close", "push", "lock")
TRAIN_SPEAKERS = ("en+m1", "en+m3")
HELDOUT_SPEAKERS = ("en+f2", "en-us+m4", "en+f4")


# --- building blocks ---------------------------------------------------------------------
def _time(duration: float, sr: int) -> np.ndarray:
    return np.arange(int(round(duration * sr)), dtype=np.float64) / sr


def band_noise(*, num_samples: int, sr: int, low_hz: float, high_hz: float,
               rng: np.random.Generator) -> np.ndarray:
    """White noise band-limited to [low_hz, high_hz] in the FFT domain, unit RMS. [S]"""
    white = rng.standard_normal(num_samples)
    spec = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(num_samples, 1.0 / sr)
    # smooth (raised-cosine) edges, a tenth of the band wide, avoid ringing
    edge = max((high_hz - low_hz) * 0.1, 1.0)
    gain = np.clip((freqs - low_hz + edge) / edge, 0, 1) * np.clip((high_hz + edge - freqs) / edge, 0, 1)
    out = np.fft.irfft(spec * gain, n=num_samples)
    rms = np.sqrt(np.mean(out ** 2)) + 1e-12
    return out / rms


def _normalise(x: np.ndarray, peak: float) -> np.ndarray:
    return (x * (peak / (np.max(np.abs(x)) + 1e-12))).astype(np.float32)


def _harmonic(t: np.ndarray, *, f0: float, bright: float, sr: int, count: int) -> np.ndarray:
    """Band-limited harmonic tone with 1/k amplitudes tilted by `bright`."""
    out = np.zeros_like(t)
    for k in range(1, count + 1):
        if k * f0 >= sr / 2:
            break
        out += (bright ** (k - 1)) / k * np.sin(2 * np.pi * k * f0 * t)
    return out


# --- event sounds (one per visual event) ----------------------------------------------------
def thud(*, sr: int, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """A soft, low impact (a door closing)."""
    t = _time(0.30, sr)
    body = band_noise(num_samples=t.size, sr=sr, low_hz=20, high_hz=350 * voice.pitch, rng=rng)
    x = body * np.exp(-t / (0.05 * voice.decay)) + 1.5 * np.sin(2 * np.pi * 70 * voice.pitch * t) * np.exp(-t / (0.08 * voice.decay))
    return _normalise(x, 0.35)


def slam(*, sr: int, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """A loud broadband bang with a ringing panel (a door slamming)."""
    t = _time(0.35, sr)
    crack = band_noise(num_samples=t.size, sr=sr, low_hz=100, high_hz=min(7000 * voice.bright, sr / 2 - 100), rng=rng)
    low = band_noise(num_samples=t.size, sr=sr, low_hz=20, high_hz=300, rng=rng)
    x = (crack * np.exp(-t / (0.025 * voice.decay)) + 0.5 * low * np.exp(-t / 0.06)
         + 0.8 * np.sin(2 * np.pi * 1100 * voice.pitch * t) * np.exp(-t / (0.1 * voice.decay)))
    return _normalise(x, 0.9)


def knock(*, sr: int, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """Two short wooden taps 110 ms apart."""
    t = _time(0.20, sr)
    x = np.zeros_like(t)
    for start in (0.0, 0.11):
        n0 = int(start * sr)
        tt = t[: t.size - n0]
        tap = band_noise(num_samples=tt.size, sr=sr, low_hz=380 * voice.pitch, high_hz=950 * voice.pitch * voice.bright, rng=rng)
        x[n0:] += tap * np.exp(-tt / (0.012 * voice.decay))
    return _normalise(x, 0.6)


def squeak(*, sr: int, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """A rising whistle-like chirp with vibrato (a squeaking hinge)."""
    dur = 0.25
    t = _time(dur, sr)
    f = 1400 * voice.pitch * 1.8 ** (t / dur) * (1 + 0.02 * np.sin(2 * np.pi * 30 * t))
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = (np.sin(phase) + 0.3 * voice.bright * np.sin(2 * phase)) * np.sin(np.pi * t / dur) ** 0.5
    return _normalise(x, 0.3)


def bell(*, sr: int, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """An inharmonic ringing bell."""
    t = _time(0.6, sr)
    f0 = 900 * voice.pitch
    x = np.zeros_like(t)
    for ratio, amp in ((1.0, 1.0), (2.76, 0.5), (5.40, 0.25), (8.93, 0.12)):
        if ratio * f0 < sr / 2:
            x += amp * voice.bright ** ratio * np.sin(2 * np.pi * ratio * f0 * t) * np.exp(-t / (0.5 * voice.decay / ratio ** 0.5))
    return _normalise(x, 0.35)


def buzz(*, sr: int, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """A harsh sawtooth buzz."""
    t = _time(0.3, sr)
    x = _harmonic(t, f0=140 * voice.pitch, bright=0.9 * voice.bright, sr=sr, count=30)
    env = np.clip(t / 0.01, 0, 1) * np.clip((0.3 - t) / (0.05 * voice.decay), 0, 1)
    return _normalise(x * env, 0.3)


def boing(*, sr: int, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """A ball bouncing: a short pitch-dropping tok."""
    t = _time(0.15, sr)
    f = 500 * voice.pitch - 200 * voice.pitch * np.clip(t / 0.12, 0, 1)
    tone = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t / (0.05 * voice.decay))
    click = band_noise(num_samples=t.size, sr=sr, low_hz=1000, high_hz=4000 * voice.bright, rng=rng) * np.exp(-t / 0.004)
    return _normalise(tone + 0.3 * click, 0.5)


EVENT_SOUNDS: dict[str, Callable[..., np.ndarray]] = {
    "thud": thud, "slam": slam, "knock": knock, "squeak": squeak, "bell": bell, "buzz": buzz, "boing": boing,
}


# --- spoken words (one per visual event) -------------------------------------------------------
def spoken(*, word: str, sr: int, speaker: str, rng: np.random.Generator) -> np.ndarray:
    """`word` said by `speaker` (an eSpeak NG voice such as "en+m1"), slightly faster or slower
    (and so higher or lower) from clip to clip; silence trimmed, so it starts at once."""
    from scipy.signal import resample_poly  # noqa: PLC0415

    from avsf.data.synthetic.speech import ENGINE_RATE, word_bank  # noqa: PLC0415

    speakers = TRAIN_SPEAKERS + HELDOUT_SPEAKERS
    if word in WORDS and speaker in speakers:  # the dataset's own bank, synthesised once per process
        x = word_bank(WORDS, speakers)[(speaker, word)]
    else:
        x = word_bank((word,), (speaker,))[(speaker, word)]
    speed = rng.uniform(0.97, 1.03)
    up = 200
    down = int(round(up * ENGINE_RATE * speed / sr))
    return _normalise(resample_poly(x, up, down), 0.6)


# --- continuous sounds -------------------------------------------------------------------------
def hum(*, duration: float, sr: int, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """A motor hum over the whole clip, amplitude-modulated at ~2.5 Hz. [S]"""
    t = _time(duration, sr)
    x = _harmonic(t, f0=110 * voice.pitch, bright=0.7 * voice.bright, sr=sr, count=8)
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 2.5 * t + rng.uniform(0, 2 * np.pi))
    return _normalise(x, 0.15)


def background(*, kind: str, duration: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Class-irrelevant background sound of unit peak (the caller sets the level). [S]"""
    t = _time(duration, sr)
    if kind == "noise":  # broadband hiss with a slow swell
        x = band_noise(num_samples=t.size, sr=sr, low_hz=50, high_hz=sr / 2 - 100, rng=rng)
        x *= 0.7 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t)
    elif kind == "wind":  # low rumble with gusts
        x = band_noise(num_samples=t.size, sr=sr, low_hz=30, high_hz=500, rng=rng)
        x *= 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t + rng.uniform(0, 6.3)) ** 2
    elif kind == "chatter":  # random short blips like distant birds or speech
        x = np.zeros_like(t)
        for _ in range(int(duration * 8)):
            start, f = rng.uniform(0, duration), rng.uniform(400, 3000)
            tt = t - start
            x += np.sin(2 * np.pi * f * tt) * np.exp(-(tt - 0.04) ** 2 / (2 * 0.02 ** 2))
    elif kind == "music":  # pentatonic notes of a harmonic instrument
        x = np.zeros_like(t)
        start = 0.0
        while start < duration:
            length = rng.uniform(0.2, 0.4)
            f0 = 220 * 2 ** (rng.choice([0, 2, 4, 7, 9, 12]) / 12)
            tt = t - start
            on = (tt >= 0) & (tt < length)
            x[on] += _harmonic(tt[on], f0=f0, bright=0.5, sr=sr, count=5) * np.exp(-tt[on] / 0.3)
            start += length
    else:
        raise ValueError(f"unknown background kind {kind!r}; known: {TRAIN_BACKGROUNDS + HELDOUT_BACKGROUNDS}")
    return _normalise(x, 1.0)


def place_events(*, track: np.ndarray, sound: np.ndarray, times: np.ndarray, sr: int) -> None:
    """Add `sound` [s] into `track` [S] at each time in `times` (seconds; may start before 0)."""
    for time in times:
        start = int(round(time * sr))
        lo, hi = max(start, 0), min(start + sound.size, track.size)
        if hi > lo:
            track[lo:hi] += sound[lo - start:hi - start]
