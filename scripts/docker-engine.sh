#!/usr/bin/env bash
# Makes sure a Docker engine answers. When none does and we are root on Debian, installs
# docker.io if needed and starts containerd and dockerd in the background (logs under
# /var/log). Exits non-zero with a clear message when no engine can be had.
set -euo pipefail

WAIT="${DOCKER_ENGINE_WAIT:-60}"

if docker info >/dev/null 2>&1; then
    exit 0
fi
if [ -n "${DOCKER_HOST:-}" ]; then
    echo "docker-engine: DOCKER_HOST=$DOCKER_HOST does not answer; start that engine first." >&2
    exit 1
fi
if [ "$(id -u)" != 0 ] || [ ! -f /etc/debian_version ]; then
    echo "docker-engine: no Docker engine answers. Start one (e.g. 'sudo systemctl start docker')," >&2
    echo "or run this as root on Debian to have it installed and started." >&2
    exit 1
fi

if ! command -v dockerd >/dev/null; then
    echo "docker-engine: installing docker.io" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

if ! pgrep -x containerd >/dev/null; then
    echo "docker-engine: starting containerd (log: /var/log/containerd.log)" >&2
    nohup containerd >>/var/log/containerd.log 2>&1 &
fi
if ! pgrep -x dockerd >/dev/null; then
    echo "docker-engine: starting dockerd (log: /var/log/dockerd.log)" >&2
    nohup dockerd --containerd=/run/containerd/containerd.sock >>/var/log/dockerd.log 2>&1 &
fi

for _ in $(seq "$WAIT"); do
    if docker info >/dev/null 2>&1; then
        echo "docker-engine: Docker engine is up" >&2
        exit 0
    fi
    sleep 1
done
echo "docker-engine: dockerd did not answer within ${WAIT}s; see /var/log/dockerd.log" >&2
exit 1
