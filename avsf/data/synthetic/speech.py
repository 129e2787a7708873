"""Spoken words for the built-in dataset, synthesised offline by eSpeak NG.

The engine is ``libespeak-ng`` (1.52) and its voice data as shipped in the
``espeakng-loader`` wheel, driven here through ctypes: no system package, no download, CPU
only, ~1,000 words per second. eSpeak NG is GPL-3.0-or-later; the project only loads that
library at run time (a dependency, like any other shared library), it vendors none of its
code.

Determinism. With its random seed fixed, eSpeak NG is deterministic for a given *sequence* of
utterances in a fresh process, but not per utterance: some synthesiser state (pitch flutter,
wave phase) carries over from one utterance to the next and survives re-initialisation, so
the same word said twice in one process differs in the last bits. :func:`word_bank` therefore
synthesises the whole bank, in a fixed order, in a fresh interpreter (``python -m
avsf.data.synthetic.speech``) and caches the result per process; the bank depends only on
(words, voices, version of the wheel).
"""

from __future__ import annotations

import ctypes
import functools
import io
import subprocess
import sys

import numpy as np

ENGINE_RATE = 22050  # Hz, eSpeak NG's output rate
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_SEED = 1


def available() -> bool:
    """True when the speech engine can be loaded (the ``espeakng-loader`` package is installed)."""
    try:
        import espeakng_loader  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


class _Engine:
    """eSpeak NG in synchronous mode: each call returns the utterance's int16 samples."""

    def __init__(self) -> None:
        import espeakng_loader  # noqa: PLC0415

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                               ctypes.c_void_p)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [self._callback_type]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(),
                                     _INITIALIZE_DONT_EXIT)
        if rate != ENGINE_RATE:
            raise RuntimeError(f"eSpeak NG failed to initialise (returned {rate})")
        self._chunks: list[np.ndarray] = []

        def collect(wav, count, _events):
            if count > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, (count,)).copy())
            return 0

        self._callback = self._callback_type(collect)  # kept referenced: the library calls it
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib

    def say(self, text: str, *, voice: str, rate: int = 160, pitch: int = 50) -> np.ndarray:
        """int16 samples [S] at :data:`ENGINE_RATE` of `text` spoken by `voice` ("en+m1")."""
        lib = self._lib
        lib.espeak_ng_SetRandSeed(_SEED)
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        lib.espeak_SetParameter(_RATE, rate, 0)
        lib.espeak_SetParameter(_PITCH, pitch, 0)
        self._chunks.clear()
        data = text.encode()
        err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0:
            raise RuntimeError(f"eSpeak NG could not say {text!r} (error {err})")
        lib.espeak_Synchronize()
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


def _synthesise(words: tuple[str, ...], voices: tuple[str, ...]) -> np.ndarray:
    """All (voice, word) utterances in this process, in a fixed order: an object array [V, W] of int16 [S]."""
    engine = _Engine()
    bank = np.empty((len(voices), len(words)), dtype=object)
    for v, voice in enumerate(voices):
        for w, word in enumerate(words):
            bank[v, w] = engine.say(word, voice=voice)
    return bank


@functools.lru_cache(maxsize=4)
def word_bank(words: tuple[str, ...], voices: tuple[str, ...]) -> dict[tuple[str, str], np.ndarray]:
    """{(voice, word): float64 samples [S] at :data:`ENGINE_RATE`, silence trimmed, peak 1}.

    Synthesised in a fresh interpreter (see the module docstring), so the result does not
    depend on what this process said before.
    """
    if not available():
        from avsf.errors import UserError  # noqa: PLC0415

        raise UserError("the built-in dataset's spoken words need the espeakng-loader package: "
                        "pip install -e . (or pip install espeakng-loader==0.2.4)")
    request = "\n".join([",".join(words), ",".join(voices)])
    proc = subprocess.run([sys.executable, "-m", "avsf.data.synthetic.speech"], input=request.encode(),
                          capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the speech synthesiser failed (exit {proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace')[-2000:]}")
    arrays = np.load(io.BytesIO(proc.stdout))
    out = {}
    for v, voice in enumerate(voices):
        for w, word in enumerate(words):
            out[(voice, word)] = _trim(arrays[f"{v}_{w}"].astype(np.float64) / 32768.0)
    return out


def _trim(x: np.ndarray, *, threshold: float = 0.02) -> np.ndarray:
    """The utterance from its first to its last sample above `threshold` of its peak, peak 1."""
    peak = np.max(np.abs(x)) if x.size else 0.0
    if peak == 0:
        raise RuntimeError("the speech synthesiser returned silence")
    loud = np.flatnonzero(np.abs(x) > threshold * peak)
    return x[loud[0]:loud[-1] + 1] / peak


def _main() -> None:
    """Read "word,word,...\\nvoice,voice,..." on stdin; write an npz of int16 utterances to stdout."""
    words_line, voices_line = sys.stdin.read().split("\n")[:2]
    words, voices = tuple(words_line.split(",")), tuple(voices_line.split(","))
    bank = _synthesise(words, voices)
    buf = io.BytesIO()
    np.savez(buf, **{f"{v}_{w}": bank[v, w] for v in range(len(voices)) for w in range(len(words))})
    sys.stdout.buffer.write(buf.getvalue())


if __name__ == "__main__":
    _main()
