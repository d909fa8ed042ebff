# The two commands a newcomer needs:
#   make demo   set everything up and run the local cluster demo
#   make test   set everything up and run the linters, type checks and tests
# Both create .venv when needed and install the project (editable) into it,
# and install the Debian packages the tests need (apt-get as root, otherwise
# they print the command to run).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.trustchain-installed
PACKAGES := node consensus ct dns infra

.PHONY: test demo lint typecheck pytest setup debs clean

setup: $(STAMP) debs

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

debs:
	@infra/scripts/ensure-debs

lint: setup
	$(BIN)/ruff check $(PACKAGES) tests
	$(BIN)/ruff format --check $(PACKAGES) tests

# mypy cannot follow setuptools' package-dir mapping, so it checks the
# `trustchain` namespace through a farm of symlinks under build/typecheck.
typecheck: setup
	@mkdir -p build/typecheck/trustchain
	@for d in $(PACKAGES); do ln -sfn ../../../$$d build/typecheck/trustchain/$$d; done
	cd build/typecheck && ../../$(BIN)/mypy --config-file ../../pyproject.toml -p trustchain

pytest: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

demo: setup
	$(BIN)/trustchain cluster demo --nodes 4 --dir .demo

clean:
	rm -rf $(VENV) .demo .bench .mypy_cache .ruff_cache .pytest_cache
