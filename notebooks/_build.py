"""Write every notebook of this folder from one template, so they stay uniform.

Run ``python notebooks/_build.py`` after changing an experiment in ``avsf/experiments.py`` or
this template; the notebooks are committed without outputs (a test checks). Each notebook
holds only calls into ``avsf.report``: a ``parameters`` cell (tagged for papermill, every
parameter commented so ``papermill --help-notebook`` documents it), an ``imports`` cell that
validates the parameters, then submit, collect and show.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from avsf.experiments import EXPERIMENTS, Experiment  # noqa: E402

# default seeds: three, the fewest the verdict rule (avsf.report.stats.MIN_SEEDS) judges; with
# fewer every claim reads "inconclusive (n seeds)"
DEFAULT_SEEDS = [0, 1, 2]

DATA_ROOT_NOTES = {
    "kinetics": "Kinetics-400 folder (train.csv, val.csv, videos); None means the built-in synthetic "
                "dataset, generated on first use",
    "kinetics_sounds": "Kinetics-Sounds folder (the 32 classes of the paper's appendix B); paper scale only",
    "epic": "EPIC-Kitchens-55 folder (action-label CSVs, videos); None means a synthetic EPIC-format "
            "view of the built-in dataset",
    "charades": "Charades folder (frame lists, frames); None means a synthetic multi-label view of the "
                "built-in dataset",
    # self-supervised block (table8_ssl)
    "kinetics600": "Kinetics-600 folder (train.csv, val.csv, videos; Kinetics-400's format) for the audio-only "
                   "row of claim P1; paper scale only",
    "ucf101": "UCF101 folder (<class>/<video>.avi and the official classInd.txt, trainlist01.txt, testlist01.txt); "
              "None means a synthetic UCF101-format view of the built-in dataset",
    "hmdb51": "HMDB51 folder (<class>/<video>.avi and the official <class>_test_split1.txt files); None means a "
              "synthetic HMDB51-format view of the built-in dataset",
    "ava": "AVA v2.1/v2.2 folder (videos/, annotations/ with the box CSVs, proposals and label map; see "
           "avsf/data/datasets/ava.py); None means the built-in synthetic AVA-format detection data",
}


def parameters_source(exp: Experiment) -> tuple[str, list[str]]:
    """The parameters cell and the names it declares."""
    lines = [
        '# Notebook parameters (papermill -p NAME VALUE); each is checked before anything is submitted.',
        'backend: str = "local"  # where runs execute: "debug" (this process), "local" (processes on this machine), "slurm"',
        'cluster: "Optional[str]" = None  # Slurm cluster profile for backend "slurm": "local" (the test cluster) or a profile name in slurm/',
        'scale: str = "smoke"  # "smoke" (tiny models, built-in data, CPU minutes), "small" (R50 size, synthetic small data), "paper"',
        f'seeds: list[int] = {DEFAULT_SEEDS!r}  # one run per seed and row, the same seeds for every row (differences are paired by seed); at least 3 for a verdict',
    ]
    for ds in exp.datasets:
        lines.append(f'data_root_{ds}: "Optional[str]" = None  # {DATA_ROOT_NOTES[ds]}')
    lines += [
        f'output_dir: "Optional[str]" = None  # where table.csv, table.md and the PNGs go; None means results/{exp.name} (smoke) or results/{exp.name}/<scale>',
        'sweep_dir: str = "sweeps"  # run directories (relative to the project); finished runs found here are reused',
        'max_parallel: int = 2  # runs at once: processes (local) or concurrent array tasks (slurm)',
        'overrides: list = []  # extra settings for every run in `avsf train --set` syntax (section.key, the equals sign, the value), e.g. solver.epochs 2 for a quick look; [] means the scale recipe',
        'render_only: bool = False  # True: render the table again from output_dir alone (its runs/ archive, runs.csv, provenance.json) with the settings it was made with; trains and submits nothing, needs neither sweep_dir nor the data',
    ]
    declared = [ln.split("=", 1)[0].split(":", 1)[0].strip() for ln in lines[1:]]
    return "\n".join(lines) + "\n", declared


def curves_note(exp: Experiment) -> str:
    """Where the intro names the learning curves: every table that trains (Fig. 3 draws its own)."""
    if not exp.rows or "curves" in exp.plots:
        return ""
    return "; `curves.png`, the runs' learning curves, beside the bars"


def build_notebook(exp: Experiment) -> nbformat.NotebookNode:
    params_src, declared = parameters_source(exp)
    intro = (f"# {exp.artifact}: {exp.title}\n\n"
             f"Reproduces {exp.artifact} of *Audiovisual SlowFast Networks for Video Recognition* "
             f"(Xiao et al., 2020) at the chosen scale and puts the paper's claims beside our numbers.\n\n"
             f"Run: `papermill notebooks/{exp.name}.ipynb results/_executed/{exp.name}.ipynb` "
             f"(smoke scale, built-in data, local backend), or with `-p scale small`, "
             f"`-p backend slurm -p cluster <profile>`. "
             f"`papermill --help-notebook notebooks/{exp.name}.ipynb` lists the parameters.\n\n"
             f"Writes `{'results/' + exp.name}/`: `table.csv` and `table.md` (ours beside the paper: the "
             f"paired difference over seeds, its 95 % interval, the minimum detectable effect and the "
             f"verdict), `rows.csv`, `runs.csv` (each cell's run by name), `runs/` (the runs behind every "
             f"number, no checkpoints), `provenance.json` (commit, versions, machine) and the PNG plots "
             f"(the forest plot of every claim first{curves_note(exp)}). `-p render_only True` renders it again from that folder alone; "
             f"`avsf report {exp.name} --html` then writes this notebook, executed, as "
             f"`notebook.html` beside the table (any browser shows it, nothing runs).")
    if exp.note:
        intro += f"\n\n{exp.note}"
    cells = [
        nbformat.v4.new_markdown_cell(intro),
        nbformat.v4.new_code_cell(params_src, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "from IPython.display import Image, Markdown, display\n\n"
            "from avsf import report\n\n"
            "# refuses unknown parameters (papermill only warns), bad values and missing data folders\n"
            f"params = report.validate_parameters(globals(), notebook={exp.name!r},\n"
            f"                                    declared={declared!r},\n"
            "                                    history=globals().get(\"In\"))\n"
            "params",
            metadata={"tags": ["imports"]}),
        nbformat.v4.new_markdown_cell("## Runs\nSubmits every run of the grid not already finished "
                                      "in `sweep_dir` and waits, with a progress bar (runs done, running "
                                      "and failed, an ETA; a failed run is named with its reason as soon "
                                      "as it fails). With `render_only`: submits nothing and reads the runs "
                                      "archived beside the table."),
        nbformat.v4.new_code_cell("entries = report.submit_and_wait(params)\nlen(entries)"),
        nbformat.v4.new_markdown_cell("## Tables\nOur numbers (mean ± std over seeds), then the "
                                      "paper's claims beside ours: paired difference, 95 % interval, "
                                      "minimum detectable effect and the verdict at this scale."),
        nbformat.v4.new_code_cell("result = report.build(params, entries)\ndisplay(Markdown(result.markdown))"),
        nbformat.v4.new_markdown_cell("## Plots"),
        nbformat.v4.new_code_cell("for png in result.figures:\n    display(Image(filename=str(png)))"),
    ]
    for cell, cell_id in zip(cells, ("intro", "parameters", "imports", "runs-title", "runs", "tables-title",
                                     "tables", "plots-title", "plots")):
        cell.id = cell_id  # stable ids: regenerating leaves unchanged notebooks byte-identical
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main() -> int:
    for exp in EXPERIMENTS.values():
        nb = build_notebook(exp)
        nbformat.validate(nb)
        path = HERE / f"{exp.name}.ipynb"
        text = nbformat.writes(nb) + "\n"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
