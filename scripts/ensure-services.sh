#!/usr/bin/env bash
# Makes sure Postgres and Redis answer on 127.0.0.1. On a Debian machine where we are
# root and one is missing or stopped, installs and starts it; otherwise says what to do.
set -euo pipefail

PG_HOST=127.0.0.1 PG_PORT=5432 REDIS_PORT=6379

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

apt_install() {
  if [ ! -f /var/lib/apt/lists/.cyberlab-updated ]; then
    apt-get update -qq && touch /var/lib/apt/lists/.cyberlab-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() {  # wait_for <description> <command...>
  local what=$1; shift
  for _ in $(seq 1 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "error: $what did not come up" >&2; return 1
}

postgres_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

if ! command -v pg_isready >/dev/null || ! postgres_up; then
  can_install || { echo "error: Postgres does not answer on $PG_HOST:$PG_PORT" >&2; exit 1; }
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for Postgres postgres_up
  # Local development and CI trust connections from this host.
  psql -h "$PG_HOST" -U postgres -c 'SELECT 1' >/dev/null 2>&1 ||
    echo "warning: connect as postgres without a password is refused; set DATABASE_URL" >&2
fi
echo "Postgres answers on $PG_HOST:$PG_PORT"

if ! command -v redis-cli >/dev/null || ! redis_up; then
  can_install || { echo "error: Redis does not answer on 127.0.0.1:$REDIS_PORT" >&2; exit 1; }
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/cyberlab.log
  wait_for Redis redis_up
fi
echo "Redis answers on 127.0.0.1:$REDIS_PORT"
