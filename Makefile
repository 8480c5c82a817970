# The two commands of the README:  `make demo`  and  `make test`.
# Both create .venv on first use and install torch-syre (editable) with the development pins.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test install bench-list clean

$(STAMP): pyproject.toml constraints-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints-dev.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/syre demo

test: $(STAMP)
	$(PY) -m pytest -q

bench-list: $(STAMP)
	$(VENV)/bin/syre bench list

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
