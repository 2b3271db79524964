# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install tools demo test bench clean

# vus and TSB-AD without their dependencies: VUS-PR (TSB-AD computes it, vus is the tests'
# reference) needs only their metric modules (numpy, scikit-learn, pandas), but the packages
# declare tensorflow / transformers / numpy<2.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[train,bench,dev,test]"
	$(BIN)/pip install -q --no-deps vus==0.0.6 TSB-AD==1.5
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
