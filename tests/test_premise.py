"""Fig. 3's premise on the built-in data, with the tiny presets exactly as they are: the
audio-only model fits and overfits faster than the visual one. Per seed (0 and 1): its train -
val top-1 gap at the last epoch exceeds SlowFast's, and its val top-1 peaks before the last
epoch. The same check is part of `avsf bench recipe` (avsf.engine.recipe_check).

The second half is not reliably met under the current recipe (docs/SMOKE_RECIPE.md). It
changes with fp32 rounding. On the bit-identical version-7 smoke data (issue 17), before the
speed merge, seed 0's audio-only val top-1 peaked at its last epoch (16 of 16) and seed 1's at
epoch 12. After the speed merge, whose numerics differ by about 3e-5, this test XPASSed in CI
at a21e8a3. It stays a non-strict xfail until the recipe makes it hold by a margin."""

import pytest

from avsf.engine.recipe_check import AUDIO, VISUAL, premise, read_epochs, train_presets

from conftest import test_data_dir

SEEDS = (0, 1)
_RUNS: dict[int, dict] = {}


def _premise(seed: int, smoke_root, tmp_path_factory) -> dict:
    if not _RUNS:  # all four runs at once, two at a time as `avsf bench recipe` trains them
        out = tmp_path_factory.mktemp("premise")
        runs = train_presets([(p, s) for s in SEEDS for p in (VISUAL, AUDIO)], out=out,
                             synthetic_root=str(test_data_dir()))
        for s in SEEDS:
            _RUNS[s] = premise(read_epochs(runs[VISUAL, s]), read_epochs(runs[AUDIO, s]))
            print(s, _RUNS[s])
    return _RUNS[seed]


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_audio_overfits_more_than_vision(seed, smoke_root, tmp_path_factory):
    result = _premise(seed, smoke_root, tmp_path_factory)
    assert result["gap_holds"], result


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="issue 12: whether seed 0's audio-only val top-1 peaks before its last "
                                        "epoch changes with fp32 rounding (held after the speed merge, not before)")
def test_audio_val_peaks_before_its_last_epoch_on_both_seeds(smoke_root, tmp_path_factory):
    results = {seed: _premise(seed, smoke_root, tmp_path_factory) for seed in SEEDS}
    assert all(r["peak_holds"] for r in results.values()), results
