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
	$(PY) -m pip install -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# The main job: the most complete end-to-end run that exists (see README).
reproduce: $(STAMP)
	$(VENV)/bin/avsf flops --preset avslowfast_r50_4x16 --crop 256 --json

clean-venv:
	rm -rf $(VENV)
