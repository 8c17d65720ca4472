#!/usr/bin/env bash
# Debian packages the build and the tests need: a compiler and cmake for llama-cpp-python,
# redis-server for the Redis stream store tests, nginx for the reverse-proxy test (deploy/nginx.conf),
# chromium for the browser tests. Installs only what is missing.
set -euo pipefail
bash "$(dirname "$0")/apt-install-missing.sh" \
  build-essential cmake redis-server nginx chromium fonts-dejavu-core
# The distribution's redis-server and nginx services are not needed: the tests start their own
# servers on free 127.0.0.1 ports (and nginx's would hold port 80).
for service in redis-server nginx; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
    systemctl stop "$service" || true
  fi
done
