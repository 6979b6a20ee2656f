#!/usr/bin/env bash
# The production web server: the API, the admin and the event streams, over ASGI
# (gunicorn managing uvicorn workers). BIND (127.0.0.1:8000) and WEB_CONCURRENCY (2)
# come from the environment; the rest of the configuration is the README's table.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# Metrics of all worker processes are summed at /metrics from files in one directory of
# this server's own, emptied at each start (PROMETHEUS_MULTIPROC_DIR; a fresh one if unset).
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR" && find "$PROMETHEUS_MULTIPROC_DIR" -name '*.db' -delete
else
  PROMETHEUS_MULTIPROC_DIR="$(mktemp -d "${TMPDIR:-/tmp}/cyberlab-metrics.XXXXXX")"
fi
export PROMETHEUS_MULTIPROC_DIR
# SERVE_APP: another ASGI application served the same way (scripts/gateway.sh sets it).
exec "$PYTHON" -m gunicorn "${SERVE_APP:-cyberlab.asgi:application}" \
  --config python:cyberlab.gunicorn_hooks \
  --worker-class uvicorn_worker.UvicornWorker \
  --workers "${WEB_CONCURRENCY:-2}" \
  --bind "${BIND:-127.0.0.1:8000}" \
  --graceful-timeout "${WEB_GRACEFUL_TIMEOUT:-10}" \
  --keep-alive 5 \
  --access-logfile "${WEB_ACCESS_LOG:--}" \
  "$@"
