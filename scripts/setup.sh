#!/usr/bin/env bash
# Sets up everything ctrdeck needs on a Debian 12 machine, as root: the
# container runtimes and test peers from Debian's packages, and the project's
# virtualenv in .venv with the test and development extras. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  python3 python3-venv python3-dev
  containerd runc crun conmon
  docker-registry skopeo busybox-static btrfs-progs prometheus
  iproute2 procps util-linux kmod tar gzip zstd openssl curl ca-certificates locales
  chromium chromium-driver
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Nothing installed here may start as a service: the tests start their own peers.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# gVisor is optional: Debian ships it only on some releases and architectures.
if ! command -v runsc >/dev/null && apt-cache show runsc >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runsc >/dev/null || true
fi

python=python3
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "ctrdeck needs Python 3.11 or newer" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,dev]'
