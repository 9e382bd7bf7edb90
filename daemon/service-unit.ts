/**
 * hoodyd as a systemd service. Most of systemd's sandboxing does not fit a daemon that mounts filesystems and
 * may start the engine as its own child, and is left out on purpose:
 * - options that give the service a private mount namespace (PrivateTmp, ProtectSystem, ProtectHome,
 *   PrivateDevices, ProtectKernel*, ReadOnlyPaths…): hoodyd mounts the loop-file BTRFS pool, and the engine, in
 *   the host's namespace, must see it;
 * - options that are inherited by every process hoodyd starts, so by a dockerd it starts and every container of
 *   it: seccomp filters (SystemCallFilter, SystemCallArchitectures, LockPersonality, RestrictRealtime,
 *   RestrictSUIDSGID: image layers carry setuid files), NoNewPrivileges (AppArmor transitions of containers),
 *   device policies (ProtectClock), MemoryDenyWriteExecute (V8's JIT);
 * - a capability bounding set: hoodyd and the engine need nearly all of them.
 * What fits: restart on failure, signalling hoodyd alone (KillMode=process), limits, an OOM score.
 */

export interface UnitOptions {
  /** The node binary (absolute). */
  node: string;
  /** dist/daemon/hoodyd.js (absolute). */
  entry: string;
  /** HOODY_* settings the service runs with. */
  env: Record<string, string>;
  /** The README of this checkout (absolute). */
  docs: string;
}

/** systemd's quoting for one Environment= assignment (spaces, quotes and backslashes escaped; % doubled). */
function quoteEnv(name: string, value: string): string {
  return `"${`${name}=${value}`.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/%/g, '%%')}"`;
}

export function serviceUnit(o: UnitOptions): string {
  const env = Object.entries(o.env)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `Environment=${quoteEnv(k, v)}`);
  return `# hoodyd: written by \`hoody service install\`; \`hoody service uninstall\` removes it.
[Unit]
Description=hoody container-host supervisor (hoodyd)
Documentation=file://${o.docs}
# With the distribution's engine, after it; without one, hoodyd starts its own dockerd.
After=network-online.target docker.service containerd.service
Wants=network-online.target

[Service]
Type=simple
ExecStart=${o.node} --no-node-snapshot ${o.entry}
${env.join('\n')}${env.length ? '\n' : ''}Restart=on-failure
RestartSec=2s
# Containers, HAProxy and a dockerd hoodyd started keep running when hoodyd stops or restarts (the data plane
# outlives the control plane): only hoodyd itself is signalled.
KillMode=process
TimeoutStopSec=30s
LimitNOFILE=1048576
TasksMax=infinity
# The kernel kills a tenant's process before the daemon that supervises them all.
OOMScoreAdjust=-500
# No sandboxing options: they would hide hoodyd's mounts from the engine or be inherited by every container
# (see daemon/service-unit.ts in hoody's source for each one and why).
UMask=0022

[Install]
WantedBy=multi-user.target
`;
}
