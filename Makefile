# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install tools demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[train,dev,test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stream-detector demo

# promtool and prometheus (Debian's package) for the alert-rule tests and the real-Prometheus test.
tools:
	sh scripts/install-tools.sh

test: $(STAMP) tools
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
