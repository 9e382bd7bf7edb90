#!/usr/bin/env bash
# One command from a fresh Debian-like box (as root) to a running hoody:
# system packages, npm dependencies, build, then `hoody up` (pool, engine, KSM, images, daemon, demo container).
set -euo pipefail
cd "$(dirname "$0")"
# systemd: its systemd-analyze checks the unit `hoody service install` writes (test/service.test.ts).
# prometheus: its promtool lints the daemon's /metrics (test/metrics.test.ts); the server itself is not used.
# etcd-server, etcd-client: the fleet directory's store; test/fleet.test.ts runs its own 3-member cluster and etcdctl.
PKGS=(docker.io jq btrfs-progs busybox-static debootstrap pebble iptables curl openssl util-linux gcc libc6-dev haproxy systemd prometheus etcd-server etcd-client)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # hoody runs its own HAProxy (one per instance); the distribution's service would hold ports 80 and 443.
  if [[ " ${missing[*]} " == *" haproxy "* && -s /run/haproxy.pid ]]; then kill "$(cat /run/haproxy.pid)" 2>/dev/null || true; fi
  # Only promtool is wanted: a Prometheus (and node exporter) the package started under systemd is stopped.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
  fi
  # The distribution's etcd member is not hoody's: fleets point at their own cluster (HOODY_FLEET_ETCD).
  if [[ " ${missing[*]} " == *" etcd-server "* ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl disable --now etcd >/dev/null 2>&1 || true
  fi
fi
# npm ci compiles isolated-vm from source here (minutes on two cores): the box keeps what it installed, keyed by
# the lockfile, node's version and the architecture, and the next fresh clone unpacks that instead.
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  key=$( (cat package-lock.json; node -p 'process.version + process.arch') | sha256sum | cut -c1-16)
  cache="/var/cache/hoody/node_modules-$key.tar"
  if [[ -s "$cache" ]] && rm -rf node_modules && tar -xf "$cache"; then
    touch node_modules/.package-lock.json
    echo "npm dependencies: unpacked from $cache" >&2
  else
    rm -rf node_modules
    npm ci --no-audit --no-fund
    if mkdir -p /var/cache/hoody 2>/dev/null && tar -cf "$cache.tmp" node_modules 2>/dev/null; then
      mv "$cache.tmp" "$cache"
      ls -t /var/cache/hoody/node_modules-*.tar | tail -n +4 | xargs -r rm -f
    else
      rm -f "$cache.tmp"
    fi
  fi
fi
npm run build --silent
exec ./hoody up "$@"
