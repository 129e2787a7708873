"""Turn finished runs into the paper's tables and figures, beside the paper's claims.

The notebooks call only this package (and :mod:`avsf.experiments`); one module per part:

- :mod:`~avsf.report.params`: :func:`validate_parameters` checks a notebook's parameters;
- :mod:`~avsf.report.submit`: :func:`submit_and_wait` runs the notebook's grid through
  :func:`avsf.grid.run_grid` (the door ``avsf sweep`` uses too) and shows progress;
- :mod:`~avsf.report.collect`: :func:`collect` / :func:`read_runs` read each run's final.json
  (one canonical name per metric), config.json and metrics.jsonl;
- :mod:`~avsf.report.stats`: the verdict rule (paired t-intervals over seeds, power, TOST, Holm);
- :mod:`~avsf.report.tables`: per-row summaries, :func:`claims_table`, the files;
- :mod:`~avsf.report.plots`: bars, forest plot, learning curves, per-class gains;
- :mod:`~avsf.report.build`: :func:`build` (sweep dir) and :func:`build_from_runs` (any runs
  table + run-name -> directory mapping) render one notebook end to end;
- :mod:`~avsf.report.architecture`: Table 1; :mod:`~avsf.report.overview`: results/README's claims;
- :mod:`~avsf.report.archive`: the trace of a table (runs.csv by run name, the runs archived under
  ``runs/``, provenance.json from :mod:`~avsf.report.provenance`), render-only mode (a table from
  results/ alone) and the check that results/ names no machine path.
"""

from avsf.report.build import Result, build, build_from_runs, overfit_epoch
from avsf.report.collect import collect, curves_of, per_class_gains, read_curves, read_runs, run_dir_of
from avsf.report.overview import results_overview
from avsf.report.params import Params, injected_parameter_names, validate_parameters
from avsf.report.stats import RULE as VERDICT_RULE
from avsf.report.submit import submit_and_wait
from avsf.report.tables import claims_table, expected_sign, parse_number, render, rows_table, summarize

__all__ = ["Params", "Result", "VERDICT_RULE", "build", "build_from_runs", "claims_table", "collect", "curves_of",
           "expected_sign", "injected_parameter_names", "overfit_epoch", "parse_number", "per_class_gains",
           "read_curves", "read_runs", "render", "results_overview", "rows_table", "run_dir_of", "submit_and_wait",
           "summarize", "validate_parameters"]
