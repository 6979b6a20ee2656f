#!/usr/bin/env bash
# Keeps lab machines from opening connections to the lab host itself: Postgres, Redis,
# the web, the gateway, the engine, whatever listens on the host's addresses. Every
# machine's bridge is named clvm* (vms/providers/docker.py); one rule drops new
# connections arriving from them, while the gateway's own connections to a machine (and
# their replies) pass. Idempotent; needs root on the lab host (run it at boot there).
set -euo pipefail

RULE=(INPUT -i clvm+ -m conntrack --ctstate NEW -j DROP)
if [ "$(id -u)" != 0 ]; then
    echo "lab-firewall: not root; machines can reach this host's services until root runs $0" >&2
    exit 0
fi
for tool in iptables ip6tables; do
    command -v "$tool" >/dev/null || continue
    "$tool" -C "${RULE[@]}" 2>/dev/null || "$tool" -I "${RULE[@]}"
done
echo "lab-firewall: machines cannot open connections to this host" >&2
