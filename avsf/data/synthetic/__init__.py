"""The built-in data: a generated audiovisual dataset, and what is derived from it.

One module per thing it makes:

- :mod:`~avsf.data.synthetic.dataset`: the classification dataset (its classes and scales,
  one clip rendered and written, the whole dataset generated once, under a lock, atomically);
  its public names are re-exported here (``ensure_synthetic``, ``CLASSES``, ``SCALES``,
  ``GENERATOR_VERSION``, ...).
- :mod:`~avsf.data.synthetic.sounds` (event sounds, hum, backgrounds, spoken words),
  :mod:`~avsf.data.synthetic.speech` (eSpeak NG, in a fresh interpreter) and
  :mod:`~avsf.data.synthetic.visuals` (MNIST sprites, their motions, the frames).
- :mod:`~avsf.data.synthetic.media`: mp4 / mkv / webm writing (PyAV), also used by the tests.
- :mod:`~avsf.data.synthetic.checksums`: the per-file sha256 shipped for the default seeds, checked
  after every generation.
- :mod:`~avsf.data.synthetic.detection`: the AVA-format detection dataset.
- :mod:`~avsf.data.synthetic.views`: EPIC, Charades, UCF101, HMDB51 and pretraining views of
  the classification dataset.
- :mod:`~avsf.data.synthetic.probes`: linear probes that check the design (sight and sound
  are complementary, sound overfits).
- :mod:`~avsf.data.synthetic.workers`: work shared with fresh interpreters (clips, frames).

``python -m avsf.data.synthetic`` is a worker of :func:`workers.run_shared` (``__main__``): clips, Charades frames.
"""

from avsf.data.synthetic.dataset import (
    CLASSES,
    CUES,
    GENERATOR_VERSION,
    SCALES,
    SPLITS,
    ClassDesign,
    ScaleSpec,
    ensure_synthetic,
    generate_dataset,
    generate_once,
    is_complete,
    read_manifest,
    render_clip,
    scale_spec,
    slug,
    swap_in,
    write_clip,
)

__all__ = ["CLASSES", "CUES", "GENERATOR_VERSION", "SCALES", "SPLITS", "ClassDesign", "ScaleSpec", "ensure_synthetic",
           "generate_dataset", "generate_once", "is_complete", "read_manifest", "render_clip", "scale_spec", "slug",
           "swap_in", "write_clip"]
