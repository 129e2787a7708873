"""Real-world-shaped files (tests/media_corpus.py), decoded against an independent reference.

For every file of the corpus: the decoded clip puts the white frame on the right frame and
the click on the right audio sample at the file's A/V offset (within one frame and 25 ms),
carries the tone wherever the file has sound (and pads where it has none), and equals a
sequential decode of the whole file without seeking, sliced to the same span. The same clip
comes out when every seek fails (an unseekable file) and when every seek lands past the clip.
"""

from __future__ import annotations

import numpy as np
import pytest

import media_corpus as M
from avsf.data import decode as D

RATE = 16000
SPANS = ((1.2, 1.0), (0.0, 0.8))  # (start, duration): one holds the event, one the file's start


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return {case.name: (case, M.write_case(case, folder)) for case in M.CASES}


@pytest.fixture(scope="module")
def references(corpus):
    return {name: M.sequential_decode(path) for name, (_, path) in corpus.items()}


def _num_frames(case: M.Case, span: float) -> int:
    # every frame of the span is sampled (twice as densely for variable frame rate)
    return int(round(span * float(case.fps))) * (2 if case.vfr else 1)


def _decode(case, path, start, span):
    n = _num_frames(case, span)
    clip = D.decode_clip(path, start_s=start, duration_s=span, num_frames=n, audio_rate=RATE)
    return clip, start + np.arange(n) * (span / n)


def _covered(case: M.Case, start: float, span: float) -> float:
    """The fraction of the span the file has sound for."""
    if case.acodec is None:
        return 0.0
    length = case.audio_s if case.audio_s is not None else M.SECONDS + case.video_start_s - case.audio_start_s
    lo, hi = max(start, case.offset_s), min(start + span, case.offset_s + length)
    return max(0.0, hi - lo) / span


@pytest.mark.parametrize("name", [c.name for c in M.CASES])
def test_event_lands_on_its_frame_and_sample_and_the_tone_is_kept(corpus, references, name):
    case, path = corpus[name]
    ref = references[name]
    info = D.probe(path)
    assert info.has_video and info.has_audio == (case.acodec is not None)
    event = M.event_time(case)
    for start, span in SPANS:
        clip, times = _decode(case, path, start, span)
        white = [k for k, f in enumerate(clip.frames) if f.mean() > 245]
        if start <= event < start + span:
            assert len(white) >= 1, f"{name}: the white frame is missing from [{start}, {start + span})"
            assert 0.0 <= times[white[0]] - event < 1.0 / float(case.fps) + 1e-6, \
                f"{name}: white frame at {times[white[0]]:.3f} s, the event is at {event:.3f} s"
        else:
            assert not white
        covered = _covered(case, start, span)
        # within 0.06 of the span: a codec may drop its first frame (wmav2: 46 ms)
        assert clip.audio_pad == pytest.approx(1.0 - covered, abs=0.06), name
        level = ref.gain * M.TONE_AMP / np.sqrt(2)
        a = clip.audio.astype(np.float64)
        click = int(round((event - start) * RATE))
        if covered > 0.9 and start <= event < start + span:
            onset = int(np.argmax(np.abs(a) > 0.5 * ref.gain * (M.TONE_AMP + M.CLICK_AMP)))
            assert abs(onset - click) / RATE <= 0.025, f"{name}: click at {start + onset / RATE:.4f} s, event {event:.4f} s"
        # the tone, away from the click and the edges of the sound
        lo = int(round((max(start, case.offset_s) - start) * RATE)) + int(0.03 * RATE)
        hi = lo + int(0.15 * RATE)
        if covered > 0.3 and not (lo - 400 <= click <= hi + 400):
            rms = float(np.sqrt(np.mean(a[lo:hi] ** 2)))
            assert rms == pytest.approx(level, rel=0.25), f"{name}: tone at rms {rms:.3f}, expected {level:.3f}"
        if covered == 0.0:
            assert np.abs(a).max() < 1e-3, f"{name}: sound where the file has none"
        assert len(clip.frames) == len(times)


@pytest.mark.parametrize("name", [c.name for c in M.CASES])
def test_clip_equals_the_sequential_decode_of_the_whole_file(corpus, references, name):
    case, path = corpus[name]
    ref = references[name]
    fps = float(case.fps) * (2 if case.vfr else 1)
    for start, span in SPANS:
        clip, times = _decode(case, path, start, span)
        expected = M.reference_frames(ref, times, fps=fps)
        mismatched = [round(t, 3) for t, a, b in zip(times, clip.frames, expected) if not np.array_equal(a, b)]
        assert not mismatched, f"{name}: frames at {mismatched} differ from the sequential decode"
        if case.acodec is None:
            continue
        with D.open_media(path) as container:
            native, rate, pad = D.decode_audio_span(container, start_s=start, duration_s=span, path=path)
        want, want_pad = M.reference_audio(ref, start_s=start, duration_s=span)
        assert rate == ref.rate and native.shape == want.shape
        assert pad == pytest.approx(want_pad, abs=0.01)
        _assert_same_audio(native, want, rate=rate, tick_s=ref.audio_tick_s, what=f"{name}: sequential decode")


def _assert_same_audio(a: np.ndarray, b: np.ndarray, *, rate: int, tick_s: float, what: str) -> None:
    """a equals b up to the codec's state after a seek (max difference < 0.02) at the best
    alignment within one tick of the container's time base. A seek places audio only as
    precisely as the container's timestamps (1 ms in mkv, webm, flv and asf), where a reader
    from the start counts samples; for such containers the residual sub-sample shift is
    allowed for by comparing energies (difference < 5 % of the signal's rms)."""
    lag_max = int(np.ceil(tick_s * rate)) + 1
    inner = slice(lag_max, len(b) - lag_max)
    diffs = [np.roll(a, lag)[inner] - b[inner] for lag in range(-lag_max, lag_max + 1)]
    if tick_s * rate <= 1.0:  # sample-exact timestamps
        worst = min(float(np.abs(d).max()) for d in diffs)
        assert worst < 0.02, f"{what}: audio differs by {worst:.4f}"
    else:
        ratio = min(float(np.sqrt(np.mean(d ** 2))) for d in diffs) / max(float(np.sqrt(np.mean(b[inner] ** 2))), 1e-9)
        assert ratio < 0.05, f"{what}: audio differs by {100 * ratio:.1f} % of its rms"


@pytest.mark.parametrize("failure", ["raises", "lands_at_the_end"])
@pytest.mark.parametrize("name", [c.name for c in M.CASES])
def test_a_failed_seek_gives_the_same_clip(corpus, references, monkeypatch, name, failure):
    """Unseekable (every seek raises EPERM, as in an AVI without an index) and misplaced seeks
    (every seek lands at the end) fall back to decoding from the start: the same clip."""
    import av

    case, path = corpus[name]
    start, span = SPANS[0]

    def native_audio():
        with D.open_media(path) as container:
            return D.decode_audio_span(container, start_s=start, duration_s=span, path=path)

    good, _ = _decode(case, path, start, span)
    good_audio = native_audio() if case.acodec else None
    real_seek = D._seek

    def broken(container, stream, t_s):
        if failure == "raises":
            raise av.PermissionError(1, "Operation not permitted")
        real_seek(container, stream, 1e6)

    monkeypatch.setattr(D, "_seek", broken)
    bad, _ = _decode(case, path, start, span)
    assert np.array_equal(good.frames, bad.frames), f"{name}: other frames after a {failure} seek"
    if case.acodec is not None:
        assert bad.audio_pad == pytest.approx(good.audio_pad, abs=0.01), name
        # decoded from the start instead of after a seek: the same samples, up to the codec's
        # state after a seek and the container's tick
        bad_audio, rate, _ = native_audio()
        _assert_same_audio(bad_audio, good_audio[0], rate=rate, tick_s=references[name].audio_tick_s,
                           what=f"{name}: after a {failure} seek")


def test_index_free_avi_gives_the_clip_of_its_indexed_twin(corpus):
    _, indexed = corpus["mjpeg_u8.avi"]
    case, streamed = corpus["mjpeg_u8_noindex.avi"]
    assert b"idx1" in indexed.read_bytes() and b"idx1" not in streamed.read_bytes()
    for start, span in SPANS:
        a, _ = _decode(case, indexed, start, span)
        b, _ = _decode(case, streamed, start, span)
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
        assert a.audio_pad == b.audio_pad == 0.0


def test_mono_downmix_follows_bs775():
    w = D.mono_weights
    assert w(("FC",)).tolist() == [1.0]
    assert w(("FL", "FR")).tolist() == [0.5, 0.5]  # stereo: the mean, as before
    five_one = w(("FL", "FR", "FC", "LFE", "BL", "BR"))
    # sound in the centre of a 5.1 file comes out at -3 dB, not at 1/6
    assert five_one[2] == pytest.approx(2 ** -0.5) and five_one[3] == 0.0
    assert five_one[4] == pytest.approx(0.5 * 2 ** -0.5)
    # channels of no stated order: their mean
    assert w(("USR0", "USR1", "USR2")).tolist() == pytest.approx([1 / 3] * 3)
