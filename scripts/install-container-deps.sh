#!/usr/bin/env bash
# Debian packages the container step of CI needs: podman and runc to build and run the image
# (docker/build.sh, docker/smoke.sh), debootstrap to make its base image locally
# (docker/make-base-image.sh), curl for the smoke test. containernetworking-plugins comes with
# podman and serves `podman run -p`. Installs only what is missing.
set -euo pipefail
bash "$(dirname "$0")/apt-install-missing.sh" podman runc debootstrap curl
