#!/usr/bin/env bash
# Debian packages the container step of CI needs: podman and runc to build and run the image
# (docker/build.sh, docker/smoke.sh), debootstrap to make its base image locally
# (docker/make-base-image.sh), curl for the smoke test. containernetworking-plugins comes with
# podman and serves `podman run -p`.
# Installs only what is missing; does nothing (but say so) where apt-get or root is not available.
set -euo pipefail

packages=(podman runc debootstrap curl)
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
