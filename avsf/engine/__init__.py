"""Training, evaluation, checkpoints and distributed execution.

- :func:`avsf.engine.train.train` runs (or resumes) one run in a run directory and tests it.
- :func:`avsf.engine.evaluate.evaluate` tests a run directory's newest valid checkpoint.
- :func:`avsf.engine.train.request_stop` asks a running ``train`` to checkpoint and return.
"""
