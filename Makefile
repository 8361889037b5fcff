# Parley: `make run` starts everything with demo data; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum requirements.lock | cut -c1-16)
# Values for the production checks (check --deploy); never used to serve anything.
PROD_ENV := DEBUG=false SECRET_KEY=ci-only-$(shell head -c 32 /dev/urandom | sha256sum | cut -c1-50) \
	ALLOWED_HOSTS=parley.example.com DATABASE_URL=sqlite:///var/deploy-check.sqlite3

.PHONY: help venv run test lint typecheck checks ci lock clean bench-rollout bench-rollout-quick

help:
	@echo "make run    - web server, Celery worker and beat with demo data (SQLite, no servers)"
	@echo "make test   - the test suite against PostgreSQL and Redis (DATABASE_URL, CELERY_BROKER_URL)"
	@echo "make lint   - ruff check and ruff format --check"
	@echo "make typecheck - mypy"
	@echo "make checks - manage.py check, makemigrations --check, schema validation, check --deploy"
	@echo "make ci     - everything CI runs"
	@echo "make lock   - re-resolve requirements.lock from pyproject.toml"

$(STAMP): requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

run: venv
	mkdir -p var
	DEBUG=true $(PY) manage.py migrate --noinput
	DEBUG=true $(PY) manage.py seed_demo
	DEBUG=true $(PY) manage.py rollout_tick
	@echo ""
	@echo "  Parley is starting:"
	@echo "    Privacy dashboard API docs  http://127.0.0.1:8000/api/docs/"
	@echo "    OpenAPI schema              http://127.0.0.1:8000/api/schema/"
	@echo "    Admin (admin / parley-admin) http://127.0.0.1:8000/admin/"
	@echo "  Stop with Ctrl-C."
	@echo ""
	DEBUG=true $(VENV)/bin/honcho --procfile Procfile.dev start

test: venv
	eval "$$($(PY) -m tests.preflight)" && $(VENV)/bin/pytest $(ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	DEBUG=true $(VENV)/bin/mypy .

checks: venv
	DEBUG=true $(PY) manage.py check --fail-level WARNING
	DEBUG=true $(PY) manage.py makemigrations --check --dry-run
	DEBUG=true $(PY) manage.py spectacular --validate --fail-on-warn --file var/openapi.yaml
	$(PROD_ENV) $(PY) manage.py check --deploy --fail-level WARNING

ci: test lint typecheck checks

bench-rollout: venv
	$(PY) bench/rollout.py

# The same on 2,000 subjects: keeps the benchmark from rotting (CI runs it; no thresholds).
bench-rollout-quick: venv
	BENCH_SUBJECTS=2000 BENCH_OUT=var/bench-quick.json $(PY) bench/rollout.py

lock: venv
	$(PY) -m pip install --quiet pip-tools
	$(VENV)/bin/pip-compile --quiet --extra dev --generate-hashes --strip-extras --allow-unsafe \
		-o requirements.lock pyproject.toml

clean:
	rm -rf var/broker var/broker-processed var/celerybeat-schedule* var/test.sqlite3
