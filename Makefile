# Set-up and everyday commands. Everything installs into .venv at the repository root.
# GPU users: make install TORCH="torch --index-url <your CUDA wheel index>" (see README).
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin

# The nerfstudio plugin lives in its own environment: nerfstudio 1.1 pins viser 0.2.7, gsplat 1.4.0,
# numpy<2 and protobuf<=3.20.3, which fourreal's own environment cannot share. fourreal goes in
# there with --no-deps (its core modules do not import viser); the plugin's package lists the
# few fourreal dependencies that nerfstudio does not bring. torchvision must match torch.
NS_VENV := .venv-ns
NS_BIN := $(NS_VENV)/bin
NS_TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test lint format clean nerfstudio test-nerfstudio

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev,assets]"
	touch $@

demo: install
	$(BIN)/fourreal demo -o demo_out

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install lint
	$(BIN)/pytest -q

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

nerfstudio: $(NS_VENV)/.installed

$(NS_VENV)/.installed: pyproject.toml plugins/nerfstudio/pyproject.toml
	$(PYTHON) -m venv $(NS_VENV)
	$(NS_BIN)/pip install --quiet $(NS_TORCH)
	$(NS_BIN)/pip install --quiet -e "plugins/nerfstudio[test]"
	$(NS_BIN)/pip install --quiet --no-deps -e .
	touch $@

# the plugin's tests (its own pytest); the `fourreal view` checks also use .venv
test-nerfstudio: nerfstudio install
	$(NS_BIN)/pytest -q plugins/nerfstudio/tests

clean:
	rm -rf $(VENV) $(NS_VENV) demo_out .pytest_cache
