import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { BUSYBOX_IMAGE } from '../host/images.js';
import { dockerExec, startTestDaemon, type TestDaemon } from './support/host.js';

/** busybox whose first instruction is /files/init when present: the probe runs before anything else could. */
const PROBE_IMAGE = 'hoody/egress-probe';
const PROBE_CMD = ['/bin/sh', '-c', "[ -x /files/init ] && /files/init; trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"];

interface Ports {
  http: number;
  https: number;
}
interface View {
  engineId: string;
}

async function sh(cmd: string, args: string[]): Promise<void> {
  await execa(cmd, args);
}

async function listen(port: number, host: string, banner: string): Promise<Server> {
  const s = createServer((c) => {
    c.on('error', () => undefined);
    c.end(`${banner}\n`);
  });
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(port, host, resolve);
  });
  return s;
}

/**
 * A stand-in for the world and for a cloud metadata service, reached by routing through the host: a network
 * namespace behind a veth pair holding a "public" address (198.18.x.77) and a link-local one (169.254.x.77).
 */
async function remoteNetwork(tag: string, octet: number): Promise<{ world: string; linkLocal: string; server: ChildProcess; remove(): Promise<void> }> {
  const ns = `egtest-${tag}`;
  const [host, peer] = [`egh${tag}`, `egn${tag}`];
  const world = `198.18.${octet}.77`;
  const linkLocal = `169.254.${octet}.77`;
  await sh('ip', ['netns', 'add', ns]);
  await sh('ip', ['link', 'add', host, 'type', 'veth', 'peer', 'name', peer]);
  await sh('ip', ['link', 'set', peer, 'netns', ns]);
  await sh('ip', ['addr', 'add', `198.18.${octet}.1/24`, 'dev', host]);
  await sh('ip', ['link', 'set', host, 'up']);
  await sh('ip', ['route', 'add', `${linkLocal}/32`, 'dev', host]);
  for (const args of [
    ['addr', 'add', `${world}/24`, 'dev', peer],
    ['addr', 'add', `${linkLocal}/32`, 'dev', peer],
    ['link', 'set', peer, 'up'],
    ['link', 'set', 'lo', 'up'],
    ['route', 'add', 'default', 'via', `198.18.${octet}.1`],
  ])
    await sh('ip', ['netns', 'exec', ns, 'ip', ...args]);
  const py = "import socketserver as s\nclass H(s.BaseRequestHandler):\n def handle(self): self.request.sendall(b'remote service\\n')\ns.ThreadingTCPServer.allow_reuse_address=True\ns.ThreadingTCPServer(('0.0.0.0',8081),H).serve_forever()";
  const server = spawn('ip', ['netns', 'exec', ns, 'python3', '-c', py], { stdio: 'ignore' });
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    const r = await execa('ip', ['netns', 'exec', ns, 'python3', '-c', `import socket; socket.create_connection(('${world}',8081),1)`], { reject: false });
    if (r.exitCode === 0) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    world,
    linkLocal,
    server,
    async remove() {
      server.kill('SIGKILL');
      await execa('ip', ['link', 'del', host], { reject: false });
      await execa('ip', ['netns', 'del', ns], { reject: false });
    },
  };
}

/** A's first instruction: one connect per target, results to /files (the daemon is down: no API to ask). */
function probeScript(targets: Record<string, [string, number]>): string {
  const lines = ['#!/bin/sh', 'r=/files/probe.tmp', ': > $r'];
  for (const [name, [host, port]] of Object.entries(targets))
    lines.push(`echo "${name}=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 4 ${host} ${port} 2>&1 | tr '\\n' ' ')" >> $r`);
  lines.push('mv $r /files/probe.out', '');
  return lines.join('\n');
}

async function waitForFile(path: string, ms: number): Promise<string> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const text = await readFile(path, 'utf8').catch(() => null);
    if (text !== null) return text;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${path} did not appear within ${ms} ms`);
}

/** A v6 address of the host other than loopback (its ULA/global one if any, else a link-local one). */
function hostV6(): string | null {
  const all = Object.entries(networkInterfaces()).flatMap(([dev, as]) => (as ?? []).map((a) => ({ dev, ...a })));
  const v6 = all.filter((a) => a.family === 'IPv6' && !a.internal);
  return v6.find((a) => !a.address.startsWith('fe80'))?.address ?? null;
}

describe('hostile tenant: egress holds without the daemon', () => {
  let d: TestDaemon;
  let ports: Ports;
  let a: View;
  let b: View;
  let hostServer: Server;
  let remote: Awaited<ReturnType<typeof remoteNetwork>>;
  const tag = randomInt(0x1000, 0xffff).toString(16);

  before(async () => {
    const base = await execa('docker', ['create', BUSYBOX_IMAGE]);
    const tmp = String(base.stdout).trim();
    await sh('docker', ['commit', '--change', `CMD ${JSON.stringify(PROBE_CMD)}`, tmp, PROBE_IMAGE]);
    await sh('docker', ['rm', '-f', tmp]);
    remote = await remoteNetwork(tag, randomInt(2, 250));
    d = await startTestDaemon();
    ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
    await d.client.call('POST', '/v1/containers', { name: 'a', image: PROBE_IMAGE });
    await d.client.call('POST', '/v1/containers', { name: 'b' });
    a = await d.client.call<View>('GET', '/v1/containers/a');
    b = await d.client.call<View>('GET', '/v1/containers/b');
    await dockerExec(b.engineId, ['sh', '-c', 'mkdir -p /tmp/www && echo b-service > /tmp/www/index.html && httpd -p 8080 -h /tmp/www']);
    // Some other service of the host's, on every address, v4 and v6.
    hostServer = await listen(0, '::', 'host service');
  });
  after(async () => {
    hostServer?.close();
    await d?.destroy();
    await remote?.remove();
    await execa('docker', ['rmi', PROBE_IMAGE], { reject: false });
  });

  test("a container restarted by the engine while hoodyd is dead is filtered from its first instruction", async () => {
    const bIp = (await dockerExec(b.engineId, ['sh', '-c', "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1"])).output.trim();
    const gateway = (await dockerExec(a.engineId, ['sh', '-c', "ip route | awk '/default/ {print $3}'"])).output.trim();
    const hostPort = (hostServer.address() as { port: number }).port;
    const script = probeScript({
      other: [bIp, 8080],
      hostport: [gateway, hostPort],
      linklocal: [remote.linkLocal, 8081],
      world: [remote.world, 8081],
      public: [gateway, ports.http],
    });
    const w = await dockerExec(a.engineId, ['sh', '-c', `cat > /files/init <<'EOF'\n${script}EOF\nchmod +x /files/init`]);
    assert.equal(w.exitCode, 0, w.output);

    await d.stop('SIGKILL');
    // The public port stays with the data plane (HAProxy) while hoodyd is dead: its answer for the dead daemon
    // proves that port is let through.
    {
      await sh('docker', ['restart', '-t', '1', a.engineId]);
      const out = await waitForFile(join(d.stateDir, 'pool', 'containers', 'a', 'files', 'probe.out'), 60_000);
      assert.equal(d.process.exitCode !== null || d.process.signalCode !== null, true, 'hoodyd is still down');
      const result = Object.fromEntries(out.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
      const broken = [
        /b-service/.test(result.other ?? '') && 'another container reached',
        /host service/.test(result.hostport ?? '') && 'a host port that is not public reached',
        /remote service/.test(result.linklocal ?? '') && 'link-local reached',
        !/HOODY_DAEMON_UNAVAILABLE/.test(result.public ?? '') && 'the public port is not reachable',
        !/remote service/.test(result.world ?? '') && 'the world is not reachable',
      ].filter(Boolean);
      assert.deepEqual(broken, [], out);
    }
    await d.restart();
  });

  test('no IPv6 inside: no global or ULA address or route, a v6 connect to the host fails', async () => {
    const r = await dockerExec(a.engineId, ['sh', '-c', 'cat /proc/net/if_inet6; echo ---; ip -6 route 2>&1; echo ---; cat /proc/sys/net/ipv6/conf/all/disable_ipv6']);
    const [addrs, routes, disabled] = r.output.split('---\n');
    // if_inet6 columns: address, ifindex, prefix, scope (00 = global, ULA included), flags, name.
    assert.equal((addrs ?? '').split('\n').filter((l) => / 00 [0-9a-f]+ +\S+$/.test(l.trim())).length, 0, r.output);
    assert.doesNotMatch(routes ?? '', /^(default|[0-9a-f]*:)/m, r.output);
    assert.equal((disabled ?? '').trim(), '1');
    const v6 = hostV6();
    if (v6) {
      const hostPort = (hostServer.address() as { port: number }).port;
      const c = await dockerExec(a.engineId, ['sh', '-c', `nc -w 3 ${v6} ${hostPort} </dev/null 2>&1`]);
      assert.doesNotMatch(c.output, /host service/);
    }
  });

  test('containers made on the default bridge (egress open) move to the filtered network, and back when opted out', async () => {
    const e = await startTestDaemon({ HOODY_CONTAINER_EGRESS: 'open' });
    try {
      await e.client.call('POST', '/v1/containers', { name: 'old' });
      const v = await e.client.call<View>('GET', '/v1/containers/old');
      const networks = async () => Object.keys(JSON.parse(String((await execa('docker', ['inspect', '--format', '{{json .NetworkSettings.Networks}}', v.engineId])).stdout)) as object);
      assert.deepEqual(await networks(), ['bridge']);
      e.env.HOODY_CONTAINER_EGRESS = 'restricted';
      await e.restart();
      const moved = await networks();
      assert.equal(moved.length, 1);
      assert.match(moved[0]!, /^hoody-[0-9a-f]{6}$/);
      // The move holds across an engine-initiated restart too.
      await sh('docker', ['restart', '-t', '1', v.engineId]);
      assert.deepEqual(await networks(), moved);
      e.env.HOODY_CONTAINER_EGRESS = 'open';
      await e.restart();
      assert.deepEqual(await networks(), ['bridge']);
    } finally {
      await e.destroy();
    }
  });
});
