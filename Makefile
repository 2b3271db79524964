# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install tools demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[train,bench,dev,test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stream-detector demo

# promtool and prometheus (Debian's package) for the alert-rule tests and the real-Prometheus test.
tools:
	sh scripts/install-tools.sh

# Two test processes (pytest-xdist), each taking whole files: most streaming tests wait on
# Kafka (group joins, settle periods) and the other process uses that time; 726 s instead of
# 1,163 s for the suite on this 2-core machine under the same background load.
test: $(STAMP) tools
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) build *.egg-info
