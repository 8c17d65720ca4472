#!/usr/bin/env bash
# Build a local stand-in for the official `python:3.11-slim` image, for hosts that cannot pull it.
#
# ON A MACHINE WITH REGISTRY ACCESS THIS SCRIPT IS UNNECESSARY: `docker build .` / `podman build .`
# pulls the real python:3.11-slim. This exists because the project's build machines reach only the
# Debian archive and PyPI, not a container registry.
#
# What it makes: a Debian 12 (bookworm) `debootstrap --variant=minbase` root filesystem with Debian's
# python3.11 + python3.11-venv + ca-certificates, bookworm-security/-updates applied, the same
# dpkg "slim" excludes as the official debian:*-slim images (no docs/man/locales), and
# /usr/local/bin/python{,3} symlinks like the official image. It is imported into podman's local
# storage as both `python:3.11-slim` and `docker.io/library/python:3.11-slim`, so the Dockerfile's
# `FROM python:3.11-slim` resolves locally without a pull.
#
# Differences from the official image: Python is Debian's 3.11.2 (+ security patches) in /usr/bin,
# not a source build of the latest 3.11.x in /usr/local; there is no global `pip` (the Dockerfile
# uses `python -m venv`, whose ensurepip brings pip into the venv).
#
# Usage: sudo docker/make-base-image.sh            (needs root; installs debootstrap/podman/runc)
# Env:   DEBIAN_MIRROR   Debian archive URL (default: the first URIs: line in /etc/apt, else deb.debian.org)
#        SECURITY_MIRROR debian-security URL (default: derived the same way)
#        BASE_TAG        image name (default python:3.11-slim)
#        KEEP_ROOTFS=1   keep the work directory for inspection
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
BASE_TAG="${BASE_TAG:-python:3.11-slim}"
SUITE=bookworm

if [[ $(id -u) -ne 0 ]]; then
  echo "make-base-image.sh: must run as root (debootstrap and podman import into root storage)" >&2
  exit 1
fi

# --- tools ------------------------------------------------------------------------------------
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# --- mirrors: reuse what the host's apt uses (it is known to work here) ----------------------------
host_uri() { # $1: regex for the URI path, e.g. '/debian$'
  grep -hoE '^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)[a-z]+://[^[:space:]]+' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
    2>/dev/null | grep -oE '[a-z]+://[^[:space:]]+' | sed 's:/*$::' | grep -E "$1" | head -n1 || true
}
DEBIAN_MIRROR="${DEBIAN_MIRROR:-$(host_uri '/debian$')}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${SECURITY_MIRROR:-$(host_uri '/debian-security$')}"
SECURITY_MIRROR="${SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

work="$(mktemp -d /var/tmp/python-slim-rootfs.XXXXXX)"
rootfs="$work/rootfs"
cleanup() {
  for m in proc sys dev/pts dev; do
    if mountpoint -q "$rootfs/$m" 2>/dev/null; then umount -l "$rootfs/$m" || true; fi
  done
  if [[ "${KEEP_ROOTFS:-0}" != 1 ]]; then rm -rf "$work"; else echo "rootfs kept in $rootfs"; fi
}
trap cleanup EXIT

echo "==> debootstrap $SUITE (minbase) from $DEBIAN_MIRROR into $rootfs"
# python3.11-venv is installed with apt below: it depends on a virtual package (python3.11-distutils)
# that debootstrap's simple resolver cannot satisfy.
debootstrap --variant=minbase --include=python3.11,ca-certificates \
  "$SUITE" "$rootfs" "$DEBIAN_MIRROR"

# --- image configuration, as the official debian/python slim images have it ------------------------
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
rm -f "$rootfs/etc/apt/sources.list"

# Slim: never install docs, man pages or translations (same paths as debian:*-slim).
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
cat >"$rootfs/etc/apt/apt.conf.d/docker-no-recommends" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF
# No daemons start inside an image build.
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod 755 "$rootfs/usr/sbin/policy-rc.d"

echo "==> python3.11-venv, $SUITE-updates and $SUITE-security"
mount -t proc proc "$rootfs/proc"
mount --bind /dev "$rootfs/dev"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  sh -ec 'apt-get update -qq && apt-get -y -qq -o Dpkg::Options::=--force-confold dist-upgrade \
          && apt-get install -y -qq --no-install-recommends python3.11-venv && apt-get clean'
umount -l "$rootfs/dev" "$rootfs/proc"

# `python` and `python3` on the PATH at /usr/local/bin, like the official image.
ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python3"
ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python"

# Trim: docs/man/locales installed before the excludes existed, apt lists, caches, logs, host bits.
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$rootfs"/usr/share/{man,groff,info,lintian,linda}/* \
  "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
  "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/* "$rootfs"/root/.cache
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
find "$rootfs/usr/lib/python3.11" -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true
: >"$rootfs/etc/resolv.conf"
: >"$rootfs/etc/hostname"
rm -f "$rootfs/etc/machine-id" && : >"$rootfs/etc/machine-id"

echo "==> importing as $BASE_TAG"
image_id="$(tar --numeric-owner --xattrs -C "$rootfs" -c . | podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "debootstrap $SUITE minbase + Debian python3.11 (stand-in for $BASE_TAG)" \
  - "$BASE_TAG")"
image_id="${image_id##*:}"
# A fully qualified alias, so `FROM python:3.11-slim` resolves however short names are configured.
case "$BASE_TAG" in
  */*) ;;
  *) podman tag "$image_id" "docker.io/library/$BASE_TAG" ;;
esac

podman run --rm --runtime runc --cgroup-manager=cgroupfs --network none "$image_id" \
  sh -c 'python --version && python3 -c "import ssl, venv, ensurepip; print(ssl.OPENSSL_VERSION)"'
podman images --filter "reference=*python*"
echo "done: $BASE_TAG ($image_id)"
