"""Training, evaluation, checkpoints and distributed execution.

- :func:`avsf.engine.train.train` runs (or resumes) one run in a run directory and tests it.
- :func:`avsf.engine.evaluate.evaluate` tests a run directory's newest valid checkpoint.
- :func:`avsf.engine.train.request_stop` asks a running ``train`` to checkpoint and return.
- :mod:`avsf.engine.tasks`: what classification, detection and pretraining do differently (the
  batch, the loss, the evaluation, the final split), one :class:`~avsf.engine.tasks.Task` each;
  the trainer and the evaluator run the same loops for all of them.
- :mod:`avsf.engine.transfer`: starting any task from another run's backbone (``model.init_from``,
  ``model.freeze``).
"""
