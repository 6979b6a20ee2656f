#!/usr/bin/env bash
# Makes sure Debian's Chromium is here for the browser tests (no browser is downloaded:
# Playwright drives this executable). Installs it where we are root on Debian.
set -euo pipefail

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "browser: installing Debian's chromium" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
fi
[ -x "$CHROMIUM" ] || { echo "browser: $CHROMIUM is missing (Debian: apt-get install chromium)" >&2; exit 1; }
