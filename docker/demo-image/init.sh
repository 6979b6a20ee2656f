#!/bin/sh
# The demo lab machine: a web server on port 8080 whose /flag is the learner's flag
# (the FLAG variable the platform passes in), so a test can fetch and submit it.
set -e
mkdir -p /www
cp /srv/index.html /www/index.html
if [ -n "$FLAG" ]; then
    printf '%s\n' "$FLAG" > /www/flag
fi
exec httpd -f -p 8080 -h /www
