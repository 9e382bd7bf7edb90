#!/usr/bin/env bash
# One command from a fresh Debian-like box (as root) to a running hoody:
# system packages, npm dependencies, build, then `hoody up` (pool, engine, KSM, images, daemon, demo container).
set -euo pipefail
cd "$(dirname "$0")"
PKGS=(docker.io btrfs-progs busybox-static debootstrap pebble iptables curl openssl util-linux gcc libc6-dev haproxy)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # hoody runs its own HAProxy (one per instance); the distribution's service would hold ports 80 and 443.
  if [[ " ${missing[*]} " == *" haproxy "* && -s /run/haproxy.pid ]]; then kill "$(cat /run/haproxy.pid)" 2>/dev/null || true; fi
fi
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi
npm run build --silent
exec ./hoody up "$@"
