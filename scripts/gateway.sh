#!/usr/bin/env bash
# The gateway to lab machines (vms/proxy.py): each machine's HTTP ports at an origin of
# their own (VM_GATEWAY_URL), entered by the machine's owner only. GATEWAY_BIND
# (127.0.0.1:8001) and GATEWAY_CONCURRENCY (1) come from the environment; the rest of
# the configuration is the web server's (the README's table).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" -m gunicorn vms.proxy:application \
  --worker-class uvicorn_worker.UvicornWorker \
  --workers "${GATEWAY_CONCURRENCY:-1}" \
  --bind "${GATEWAY_BIND:-127.0.0.1:8001}" \
  --graceful-timeout "${WEB_GRACEFUL_TIMEOUT:-10}" \
  --keep-alive 5 \
  --access-logfile "${GATEWAY_ACCESS_LOG:--}" \
  "$@"
