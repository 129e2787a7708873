"""Fig. 3's premise on the built-in data, with the tiny presets exactly as they are: the
audio-only model fits and overfits faster than the visual one. Per seed (0 and 1): its train -
val top-1 gap at the last epoch exceeds SlowFast's, and its val top-1 peaks before the last
epoch. The same check is part of `avsf bench recipe` (avsf.engine.recipe_check)."""

import pytest

from avsf.engine.recipe_check import AUDIO, VISUAL, premise, read_epochs, train_preset

from conftest import test_data_dir


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_audio_overfits_more_and_earlier_than_vision(seed, smoke_root, tmp_path):
    runs = {p: train_preset(p, seed=seed, out=tmp_path, synthetic_root=str(test_data_dir())) for p in (VISUAL, AUDIO)}
    result = premise(read_epochs(runs[VISUAL]), read_epochs(runs[AUDIO]))
    print(result)
    assert result["gap_holds"], result
    assert result["peak_holds"], result
