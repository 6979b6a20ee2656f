#!/bin/sh
# The demo lab machine: a web server on port 8080 whose /flag is the learner's flag
# (the FLAG variable the platform passes in), so a test can fetch and submit it, and a
# TCP echo service on port 7000 (what a tunnel through the gateway reaches). /cgi-bin/ws
# is a WebSocket that speaks first (one message, then a close).
set -e
mkdir -p /www
cp /srv/index.html /www/index.html
if [ -n "$FLAG" ]; then
    printf '%s\n' "$FLAG" > /www/flag
fi
nc -ll -p 7000 -e /bin/cat &
exec httpd -f -p 8080 -h /www
