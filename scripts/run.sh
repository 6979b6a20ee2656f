#!/usr/bin/env bash
# `make run`: the whole platform on this host, in the foreground, with demo content.
# Web (scripts/serve.sh), the gateway to lab machines (scripts/gateway.sh), a Celery worker
# and beat start together; Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p var

# Secrets made once per checkout and kept under var/ (never committed).
if [ ! -f var/local.env ]; then
  {
    echo "SECRET_KEY=$($PY -c 'import secrets; print(secrets.token_urlsafe(50))')"
    echo "FLAG_SECRET=$($PY -c 'import secrets; print(secrets.token_urlsafe(32))')"
    echo "DEMO_ADMIN_PASSWORD=$($PY -c 'import secrets; print(secrets.token_urlsafe(12))')"
  } > var/local.env
fi
set -a
# shellcheck disable=SC1091
. var/local.env
set +a
export DEBUG="${DEBUG:-0}" HTTPS="${HTTPS:-0}" ALLOWED_HOSTS="${ALLOWED_HOSTS:-localhost,127.0.0.1,[::1]}"
PORT="${PORT:-8000}"

if [ -z "${DATABASE_URL:-}" ]; then
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/cyberlab"
    $PY - <<'PYEOF'
import psycopg
with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'cyberlab'").fetchone():
        conn.execute('CREATE DATABASE "cyberlab"')
PYEOF
    echo "Database: Postgres at 127.0.0.1:5432/cyberlab"
  else
    echo "Database: no Postgres on 127.0.0.1:5432, using SQLite at var/cyberlab.sqlite3"
  fi
else
  echo "Database: DATABASE_URL from the environment"
fi

if [ "$(redis-cli -h "${REDIS_HOST:-127.0.0.1}" -p "${REDIS_PORT:-6379}" ping 2>/dev/null)" != PONG ] &&
   [ -z "${REDIS_URL:-}" ]; then
  echo "Redis does not answer on 127.0.0.1:6379; starting one" && scripts/ensure-services.sh >/dev/null || true
fi

if [ -z "${VM_PROVIDER:-}" ]; then
  if scripts/docker-engine.sh >/dev/null 2>&1 && scripts/lab-firewall.sh && scripts/demo-image.sh >/dev/null; then
    export VM_PROVIDER=docker
    echo "Lab machines: Docker engine found, demo image ready"
  else
    export VM_PROVIDER=none
    echo "Lab machines: no Docker engine; machine endpoints will answer 503 (VM_PROVIDER=none)"
  fi
fi

$PY manage.py migrate --noinput -v 0
$PY manage.py collectstatic --noinput -v 0
$PY manage.py seed_demo

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
.venv/bin/celery -A cyberlab worker --loglevel INFO --concurrency 2 & pids+=($!)
.venv/bin/celery -A cyberlab beat --loglevel INFO --schedule var/celerybeat-schedule & pids+=($!)
BIND="127.0.0.1:$PORT" scripts/serve.sh & pids+=($!)
GATEWAY_BIND="${GATEWAY_BIND:-127.0.0.1:8001}" scripts/gateway.sh & pids+=($!)

cat <<MSG

  CyberLab is running at http://127.0.0.1:$PORT/
    admin     http://127.0.0.1:$PORT/admin/   user: admin   password: $DEMO_ADMIN_PASSWORD
    API       http://127.0.0.1:$PORT/api/v1/
    API docs  http://127.0.0.1:$PORT/api/docs/
    health    http://127.0.0.1:$PORT/healthz  http://127.0.0.1:$PORT/readyz
    machines  each at its own origin, http://<name>.localhost:8001/ (the links the API gives)
  Ctrl-C stops web, gateway, worker and beat.

MSG
wait -n "${pids[@]}"
