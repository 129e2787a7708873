"""The AVSlowFast model family: ``build_model(cfg.model)`` builds SlowFast, AVSlowFast, the
Audio pathway alone or the late-fusion ensemble; ``describe_stages`` gives the Table-1 shapes."""

from avsf.models.network import AVSlowFast, LateFusion, build_model, describe_stages, example_inputs

__all__ = ["AVSlowFast", "LateFusion", "build_model", "describe_stages", "example_inputs"]
