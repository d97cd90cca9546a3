# tiltbench: every target creates the virtualenv first, so a fresh clone needs only `make test`
# or `make benchmark`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SUITE  ?= quick
ARGS   ?=
# ACCEL=cuda12 | cuda13 | tpu adds the accelerator build of the pinned jax (empty: CPU only)
ACCEL  ?=
ACCELS := cuda12 cuda13 tpu
ifneq ($(filter-out $(ACCELS),$(ACCEL)),)
$(error ACCEL='$(ACCEL)' is not an accelerator build; valid values: $(ACCELS), or leave it empty for CPU)
endif

.PHONY: install test test-slow benchmark leaderboard perf claims digits lint format clean

# The project's own sources are byte-compiled once here: where PYTHONDONTWRITEBYTECODE is set (as on
# this project's machines), every Python process (each test worker and subprocess) would otherwise
# compile them again from source; Python ignores a .pyc whose source has changed since.
$(VENV)/.installed: pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -c requirements/constraints.txt -e '.[test]'
	$(VENV)/bin/python -m compileall -q samplers targets benchmarks scripts
	touch $@

install: $(VENV)/.installed $(if $(ACCEL),$(VENV)/.accel-$(ACCEL))
	@$(PY) -c "import jax; print('jax', jax.__version__, 'sees', jax.devices())"

# the accelerator extra on top of the CPU install (a stamp per build, so switching builds reinstalls)
$(VENV)/.accel-%: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -c requirements/constraints.txt -e '.[$*]'
	touch $@

test: install
	$(PY) -m pytest -q -m "not slow" -n auto --dist worksteal tests

test-slow: install
	$(PY) -m pytest -q -m slow -n auto --dist worksteal tests

benchmark: install
	$(PY) -m benchmarks benchmark --suite $(SUITE) $(ARGS)

leaderboard: install
	$(PY) -m benchmarks leaderboard $(ARGS)

perf: install
	$(PY) -m benchmarks perf $(ARGS)

claims: install
	$(PY) -m benchmarks claims $(ARGS)

digits: install
	$(PY) -m benchmarks digits $(ARGS)

lint: install
	$(VENV)/bin/ruff check targets samplers benchmarks tests scripts
	$(VENV)/bin/ruff format --check targets samplers benchmarks tests scripts

format: install
	$(VENV)/bin/ruff format targets samplers benchmarks tests scripts

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
