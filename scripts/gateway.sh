#!/usr/bin/env bash
# The gateway to lab machines (vms/proxy.py): each machine's HTTP ports at an origin of
# their own (VM_GATEWAY_URL), entered by the machine's owner only. GATEWAY_BIND
# (127.0.0.1:8001), GATEWAY_CONCURRENCY (1) and GATEWAY_ACCESS_LOG come from the
# environment; it is served as scripts/serve.sh serves the web, with the same settings.
set -euo pipefail
export SERVE_APP=vms.proxy:application
# Its metrics files are its own: the web empties its directory when it starts.
unset PROMETHEUS_MULTIPROC_DIR
export BIND="${GATEWAY_BIND:-127.0.0.1:8001}"
export WEB_CONCURRENCY="${GATEWAY_CONCURRENCY:-1}"
export WEB_ACCESS_LOG="${GATEWAY_ACCESS_LOG:--}"
exec "$(dirname "$0")/serve.sh" "$@"
