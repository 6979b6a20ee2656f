#!/usr/bin/env bash
# The production web server: the API, the admin and the event streams, over ASGI
# (gunicorn managing uvicorn workers). BIND (127.0.0.1:8000) and WEB_CONCURRENCY (2)
# come from the environment; the rest of the configuration is the README's table.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# SERVE_APP: another ASGI application served the same way (scripts/gateway.sh sets it).
exec "$PYTHON" -m gunicorn "${SERVE_APP:-cyberlab.asgi:application}" \
  --worker-class uvicorn_worker.UvicornWorker \
  --workers "${WEB_CONCURRENCY:-2}" \
  --bind "${BIND:-127.0.0.1:8000}" \
  --graceful-timeout "${WEB_GRACEFUL_TIMEOUT:-10}" \
  --keep-alive 5 \
  --access-logfile "${WEB_ACCESS_LOG:--}" \
  "$@"
