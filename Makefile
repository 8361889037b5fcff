# Parley: `make run` starts everything with demo data; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum requirements.lock | cut -c1-16)
# Values for the production checks (check --deploy); never used to serve anything.
PROD_ENV := DEBUG=false SECRET_KEY=ci-only-$(shell head -c 32 /dev/urandom | sha256sum | cut -c1-50) \
	ALLOWED_HOSTS=parley.example.com DATABASE_URL=sqlite:///var/deploy-check.sqlite3

.PHONY: help venv run test lint typecheck checks ci lock clean system-tools messages \
	bench bench-quick bench-rollout bench-rollout-quick bench-http fuzz

help:
	@echo "make run    - web server, Celery worker and beat with demo data (SQLite, no servers)"
	@echo "make test   - the test suite against PostgreSQL and Redis (DATABASE_URL, CELERY_BROKER_URL)"
	@echo "make lint   - ruff check, ruff format --check and bandit"
	@echo "make typecheck - mypy"
	@echo "make checks - manage.py check, makemigrations --check, schema validation, check --deploy"
	@echo "make ci     - everything CI runs"
	@echo "make lock   - re-resolve requirements.lock from pyproject.toml"
	@echo "make bench  - every benchmark (PostgreSQL, Redis, gunicorn, wrk); bench-quick on small data"

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
	@echo "    Privacy dashboard           http://127.0.0.1:8000/dashboard/signin (demo-de-anna / parley-demo)"
	@echo "    API docs                    http://127.0.0.1:8000/api/docs/"
	@echo "    OpenAPI schema              http://127.0.0.1:8000/api/schema/"
	@echo "    Admin (admin / parley-admin) http://127.0.0.1:8000/admin/"
	@echo "  Stop with Ctrl-C."
	@echo ""
	DEBUG=true $(VENV)/bin/honcho --procfile Procfile.dev start

# axe-core for the dashboard's browser tests, from the npm registry. Without npm (or
# Chromium) those tests are skipped with a notice, except under CI=true.
node_modules/.package-lock.json: package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the browser tests will be skipped (CI installs it)"; fi

test: venv node_modules/.package-lock.json
	eval "$$($(PY) -m tests.preflight)" && $(VENV)/bin/pytest $(ARGS)

# The schema fuzzing at release depth (CI runs it with 25 and 3 examples per operation).
fuzz: venv
	eval "$$($(PY) -m tests.preflight)" && FUZZ_MAX_EXAMPLES=500 FUZZ_SCOPE_EXAMPLES=25 \
		$(VENV)/bin/pytest tests/security/test_schema_fuzz.py -q -s $(ARGS)

# Re-extract the dashboard's messages after changing its text, then compile them.
messages: venv
	DEBUG=true $(PY) manage.py makemessages -l zh_Hans -l fr -l pt_BR --ignore=.venv \
		--ignore=node_modules --ignore=tests --ignore=bench --ignore=var --ignore=billing --no-obsolete
	DEBUG=true $(PY) manage.py compilemessages --ignore=.venv --ignore=node_modules

# bandit: every check on the project; tests/ without the few that only test code may
# need (reasons in pyproject.toml [tool.bandit]).
BANDIT_TEST_SKIPS := B105,B106,B310,B404,B603

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/bandit -q -c pyproject.toml -r . -x ./tests,./.venv,./node_modules,./var
	$(VENV)/bin/bandit -q -c pyproject.toml -r tests --skip $(BANDIT_TEST_SKIPS)

typecheck: venv
	DEBUG=true $(VENV)/bin/mypy .

checks: venv
	DEBUG=true $(PY) manage.py check --fail-level WARNING
	DEBUG=true $(PY) manage.py makemigrations --check --dry-run
	DEBUG=true $(PY) manage.py spectacular --validate --fail-on-warn --file var/openapi.yaml
	$(PROD_ENV) $(PY) manage.py check --deploy --fail-level WARNING

ci: test lint typecheck checks

# System packages the benchmarks need (Debian; installed when missing).
system-tools:
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)

# Every benchmark; the figures are merged into BENCH_OUT (default bench-results.json).
bench: venv system-tools
	$(PY) bench/rollout.py
	$(PY) bench/http_api.py
	$(PY) bench/report.py

# The same on small data, in about a minute: keeps the benchmarks from rotting (CI runs
# it; no thresholds).
bench-quick: venv system-tools
	BENCH_SUBJECTS=2000 BENCH_HTTP_SUBJECTS=5000 BENCH_ROUNDS=1 BENCH_SECONDS=3 BENCH_WARMUP=1 \
		BENCH_OUT=var/bench-quick.json sh -c 'rm -f var/bench-quick.json && $(PY) bench/rollout.py && $(PY) bench/http_api.py && $(PY) bench/report.py'

bench-rollout: venv
	$(PY) bench/rollout.py

bench-rollout-quick: venv
	BENCH_SUBJECTS=2000 BENCH_OUT=var/bench-quick.json $(PY) bench/rollout.py

bench-http: venv system-tools
	$(PY) bench/http_api.py

lock: venv
	$(PY) -m pip install --quiet pip-tools
	$(VENV)/bin/pip-compile --quiet --extra dev --generate-hashes --strip-extras --allow-unsafe \
		-o requirements.lock pyproject.toml

clean:
	rm -rf var/broker var/broker-processed var/celerybeat-schedule* var/test.sqlite3
