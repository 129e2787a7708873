# The two commands that set up a fresh machine and run: `make reproduce`, `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test reproduce tables clean-venv

# (Re)install when pyproject.toml changes; the stamp keeps repeated calls instant.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	$(PY) -m pip install --no-deps slowfast==1.0  # see pyproject.toml's `test` extra
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q --durations=25 tests

# The main job: Table 5c (DropPathway) at smoke scale on the built-in dataset, local backend,
# exactly as `papermill notebooks/ablate_droppath.ipynb` with no parameters runs it. Tables
# and plots go to results/ablate_droppath/; the executed notebook to results/_executed/
# (git-ignored) and, as a page any browser shows (outputs, figures, no machine paths), to
# results/ablate_droppath/notebook.html (`avsf report --html`); runs to sweeps/ (finished runs
# are reused by the next call).
EXECUTED := results/_executed
NOTEBOOKS := $(sort $(basename $(notdir $(wildcard notebooks/*.ipynb))))

reproduce: $(STAMP)
	mkdir -p $(EXECUTED)
	$(VENV)/bin/papermill notebooks/ablate_droppath.ipynb $(EXECUTED)/ablate_droppath.ipynb
	$(VENV)/bin/avsf report ablate_droppath --html

# Every paper table and figure at smoke scale (runs shared between notebooks are computed once).
tables: $(STAMP)
	mkdir -p $(EXECUTED)
	set -e; for nb in $(NOTEBOOKS); do \
		$(VENV)/bin/papermill notebooks/$$nb.ipynb $(EXECUTED)/$$nb.ipynb -p scale smoke; \
		$(VENV)/bin/avsf report $$nb --html; \
	done

clean-venv:
	rm -rf $(VENV)
