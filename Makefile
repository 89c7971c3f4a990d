# Targets a newcomer can guess. Every target sets itself up first (dev/setup.sh is idempotent).
PY      := .venv/bin/python
VENVBIN := .venv/bin

.PHONY: setup test lint typecheck compile layering bench demo clean

setup:
	@sh dev/setup.sh

test: setup lint typecheck
	$(PY) -m pytest -q

lint: setup layering compile
	$(VENVBIN)/ruff check .
	$(VENVBIN)/ruff format --check .

# Nothing outside firmware/boards/ may touch the hardware modules.
layering: setup
	$(PY) dev/check_layering.py

# What runs on the unix port must also compile for the ESP32 (Xtensa, windowed ABI).
compile: setup
	$(PY) dev/compile_firmware.py --check

typecheck: setup
	$(VENVBIN)/mypy
	$(PY) dev/typecheck_micropython.py

bench: setup
	$(PY) -m bench

# The simulated city block (tools/demo): gateway + web page, radio medium, 24 MicroPython nodes
# playing a 35-hour story in about 5 minutes. Ctrl-C stops it cleanly.
# Options: make demo DEMO_ARGS="--nodes 40 --duration 600"   (python -m tools.demo --help)
demo: setup
	$(PY) -m tools.demo $(DEMO_ARGS)

clean:
	rm -rf .venv build .pytest_cache .mypy_cache .ruff_cache .hypothesis
