#!/usr/bin/env bash
# Debian packages the build and the tests need: a compiler and cmake for llama-cpp-python,
# redis-server for the Redis stream store tests, nginx for the reverse-proxy test (deploy/nginx.conf),
# chromium for the browser tests.
# Installs only what is missing; does nothing (but say so) where apt-get or root is not available.
set -euo pipefail

packages=(build-essential cmake redis-server nginx chromium fonts-dejavu-core)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "missing system packages: ${missing[*]} (install them with apt-get as root)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The distribution's redis-server and nginx services are not needed: the tests start their own
# servers on free 127.0.0.1 ports (and nginx's would hold port 80).
for service in redis-server nginx; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
    systemctl stop "$service" || true
  fi
done
