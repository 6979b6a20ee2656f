#!/usr/bin/env bash
# Builds the demo lab machine image without a registry: a root filesystem holding
# Debian's statically linked busybox, imported with `docker import`. It serves HTTP on
# port 8080 (busybox httpd) and writes the FLAG variable to /www/flag; /cgi-bin/ws is a
# WebSocket that sends one message, and port 7000 echoes TCP.
#
# Tag: $VM_DEMO_IMAGE (default cyberlab/demo:latest). Quick and idempotent: the image
# carries a hash of its inputs and is rebuilt only when they change (FORCE=1 rebuilds).
set -euo pipefail

TAG="${VM_DEMO_IMAGE:-cyberlab/demo:latest}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SOURCE="$ROOT/docker/demo-image"
BUSYBOX=/bin/busybox

is_static() {
    [ -x "$1" ] && ! ldd "$1" >/dev/null 2>&1
}

if ! is_static "$BUSYBOX"; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "demo-image: installing busybox-static" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null; }
    fi
    if ! is_static "$BUSYBOX"; then
        echo "demo-image: a statically linked $BUSYBOX is needed (Debian: apt-get install busybox-static)" >&2
        exit 1
    fi
fi

HASH="$( (cat "$0" "$SOURCE"/*; sha256sum "$BUSYBOX") | sha256sum | cut -c1-16)"
CURRENT="$(docker image inspect -f '{{ index .Config.Labels "cyberlab.demo.hash" }}' "$TAG" 2>/dev/null || true)"
if [ "$CURRENT" = "$HASH" ] && [ "${FORCE:-0}" != 1 ]; then
    echo "demo-image: $TAG is up to date"
    exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
ROOTFS="$WORK/rootfs"
mkdir -p "$ROOTFS"/{bin,etc,srv,www,tmp,root,home/user,proc,sys,dev}
chmod 1777 "$ROOTFS/tmp"
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$ROOTFS/bin/$applet"
done
install -m 0755 "$SOURCE/init.sh" "$ROOTFS/init.sh"
install -m 0644 "$SOURCE/index.html" "$ROOTFS/srv/index.html"
mkdir -p "$ROOTFS/www/cgi-bin"
install -m 0755 "$SOURCE/ws" "$ROOTFS/www/cgi-bin/ws"
install -m 0644 "$SOURCE/passwd" "$ROOTFS/etc/passwd"
install -m 0644 "$SOURCE/group" "$ROOTFS/etc/group"

tar -C "$ROOTFS" --numeric-owner --owner=0 --group=0 -cf - . | docker import \
    --change 'CMD ["/init.sh"]' \
    --change 'ENV PATH=/bin' \
    --change 'EXPOSE 8080' \
    --change 'WORKDIR /' \
    --change "LABEL cyberlab.demo.hash=$HASH" \
    --message "CyberLab demo lab machine" \
    - "$TAG" >/dev/null
echo "demo-image: built $TAG"
