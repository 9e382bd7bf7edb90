import assert from 'node:assert/strict';
import { connect, createServer, type Server } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { egressNames, hostEgressRules } from '../host/egress.js';
import { execa } from 'execa';
import { applyNetnsRules, missingJumps, netnsRules } from '../host/netns.js';
import { dockerExec, startTestDaemon, type TestDaemon } from './support/host.js';

interface Ports {
  http: number;
  https: number;
}
interface View {
  engineId: string;
}

async function ipOf(engineId: string): Promise<{ ip: string; gateway: string }> {
  const r = await dockerExec(engineId, ['sh', '-c', "ip -4 -o addr show eth0 | awk '{print $4}'; ip route | awk '/default/ {print $3}'"]);
  const [cidr, gateway] = r.output.trim().split('\n');
  return { ip: cidr!.split('/')[0]!, gateway: gateway! };
}

/** Everything a TCP server sends on connect (the host service below writes one line and closes). */
function readAll(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = connect({ host, port }, () => s.end());
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    s.on('error', reject);
  });
}

/** A plain HTTP GET from inside a container with busybox nc (its static wget crashes on this image). */
async function httpGet(engineId: string, host: string, port: number, path = '/'): Promise<string> {
  const r = await dockerExec(engineId, ['sh', '-c', `printf 'GET ${path} HTTP/1.0\\r\\nHost: ${host}\\r\\n\\r\\n' | nc -w 3 ${host} ${port}`]);
  return r.output;
}

describe('containers are a boundary', () => {
  test('the rules files: loopback redirects in hoody chains only; host ports only, no bridge or link-local', () => {
    const text = netnsRules([{ fromPort: 443, toHost: '172.17.0.1', toPort: 8443 }]);
    assert.match(text, /-A HOODY-LO -o lo -d 127\.0\.0\.1\/32 -p tcp --dport 443 -j DNAT --to-destination 172\.17\.0\.1:8443/);
    // Docker's own nat chains (embedded DNS) are never declared, so --noflush leaves them alone.
    assert.doesNotMatch(text, /^:(OUTPUT|POSTROUTING|PREROUTING|INPUT) /m);
    const names = egressNames('abc123');
    const v4 = hostEgressRules(names, [8443, 8080, 0], 4);
    assert.match(v4, /-A HOODY-abc123-IN -p tcp -m multiport --dports 8080,8443 -j ACCEPT\n-A HOODY-abc123-IN -p tcp -j REJECT/);
    assert.match(v4, /-A HOODY-abc123-FWD -o hoody-abc123 -j REJECT/);
    assert.match(v4, /-A HOODY-abc123-FWD -o docker0 -j REJECT/);
    assert.match(v4, /-A HOODY-abc123-FWD -d 169\.254\.0\.0\/16 -j REJECT/);
    assert.match(hostEgressRules(names, [], 6), /-d fe80::\/10 -j REJECT --reject-with icmp6-port-unreachable/);
    assert.doesNotMatch(hostEgressRules(names, [], 4), /ACCEPT\n.*multiport/);
    assert.ok(names.bridge.length <= 15, 'fits IFNAMSIZ');
  });

  test('the rules file adds only the jumps a namespace lacks, in the same transaction', () => {
    const saved = '*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -d 127.0.0.11/32 -j DOCKER_OUTPUT\n-A OUTPUT -j HOODY-LO\nCOMMIT';
    assert.deepEqual(missingJumps(saved), { output: false, postrouting: true });
    const text = netnsRules([], missingJumps(saved));
    assert.match(text, /^-I POSTROUTING 1 -j HOODY-LO-SNAT\nCOMMIT\n$/m);
    assert.doesNotMatch(text, /-j HOODY-LO\n/);
    assert.deepEqual(missingJumps(''), { output: true, postrouting: true });
  });

  for (const egress of ['restricted', 'open'] as const) {
    describe(`egress ${egress}`, () => {
      let d: TestDaemon;
      let ports: Ports;
      let a: View;
      let b: View;
      let hostServer: Server;
      let hostPort = 0;
      before(async () => {
        d = await startTestDaemon(egress === 'open' ? { HOODY_CONTAINER_EGRESS: 'open' } : {});
        ports = (await d.client.call<{ listeners: Ports }>('GET', '/v1/host')).listeners;
        for (const n of ['a', 'b']) await d.client.call('POST', '/v1/containers', { name: n });
        a = await d.client.call<View>('GET', '/v1/containers/a');
        b = await d.client.call<View>('GET', '/v1/containers/b');
        const httpd = await dockerExec(b.engineId, ['sh', '-c', 'mkdir -p /tmp/www && echo b > /tmp/www/index.html && httpd -p 8080 -h /tmp/www']);
        assert.equal(httpd.exitCode, 0, httpd.output);
        // Some other service of the host's, on all interfaces.
        hostServer = createServer((s) => s.end('host service\n'));
        await new Promise<void>((r) => hostServer.listen(0, '0.0.0.0', r));
        hostPort = (hostServer.address() as { port: number }).port;
      });
      after(async () => {
        hostServer.close();
        await d.destroy();
      });

      test('loopback redirects: route_localnet from the engine, one jump per chain however often they are applied', async () => {
        assert.equal((await dockerExec(a.engineId, ['cat', '/proc/sys/net/ipv4/conf/all/route_localnet'])).output.trim(), '1');
        const pid = Number((await execa('docker', ['inspect', '-f', '{{.State.Pid}}', a.engineId])).stdout);
        const { gateway } = await ipOf(a.engineId);
        const redirects = [{ fromPort: ports.http, toHost: gateway, toPort: ports.http }];
        // The daemon applied them at create; twice more at once (a create and a start event can race).
        await Promise.all([applyNetnsRules(pid, redirects, true), applyNetnsRules(pid, redirects, true)]);
        const saved = (await execa('nsenter', [`--net=/proc/${pid}/ns/net`, 'iptables-save', '-t', 'nat'])).stdout.split('\n');
        assert.equal(saved.filter((l) => l === '-A OUTPUT -j HOODY-LO').length, 1, saved.join('\n'));
        assert.equal(saved.filter((l) => l === '-A POSTROUTING -j HOODY-LO-SNAT').length, 1, saved.join('\n'));
        assert.equal(saved.filter((l) => l.startsWith('-A HOODY-LO ')).length, 1, 'the chain replaced whole, not appended to');
      });

      test('no Docker socket and no admin socket inside', async () => {
        const r = await dockerExec(a.engineId, ['sh', '-c', 'ls /var/run/docker.sock /run/docker.sock /run/hoody 2>&1; mount | grep -c -E "docker.sock|hoodyd.sock"']);
        assert.match(r.output, /No such file/);
        assert.match(r.output.trim().split('\n').pop()!, /^0$/);
      });

      test("the container's own service hostnames work", async () => {
        const out = await httpGet(a.engineId, 'api.a.hoody.localhost', ports.http, '/api/v1/proxy/routes');
        // Reached hoody (a 401 without token proves the listener answered).
        assert.match(out, /HTTP\/1\.[01] 401/);
        assert.match(out, /HOODY_UNAUTHORIZED/);
      });

      test(egress === 'restricted' ? 'other containers, other host ports and link-local are unreachable' : 'the operator opted in: other containers and host ports are reachable', async () => {
        const { ip: bIp } = await ipOf(b.engineId);
        const { gateway } = await ipOf(a.engineId);
        // The controls, so that "unreachable" below means the policy: b's server and the host's service do
        // serve (seen from b itself and from the host), and a's nc does reach the gateway on a port it may use.
        // Status 200 and the body "b" (the exec output loses its final newline).
        const served = /^HTTP\/1\.[01] 200 [\s\S]*?\r?\n\r?\nb\n?$/;
        assert.match(await httpGet(b.engineId, '127.0.0.1', 8080, '/index.html'), served, "b's httpd serves");
        const fromHost = await fetch(`http://${bIp}:8080/index.html`);
        assert.deepEqual([fromHost.status, await fromHost.text()], [200, 'b\n'], "b's httpd answers on its bridge address");
        assert.equal(await readAll(gateway, hostPort), 'host service\n', "the host's service answers on the gateway address");
        const listener = await httpGet(a.engineId, gateway, ports.http, '/');
        assert.match(listener, /^HTTP\/1\.[01] 404 /, `a reaches hoody's listener on the gateway: ${listener}`);
        assert.match(listener, /HOODY_NOT_FOUND/);

        const toB = await httpGet(a.engineId, bIp, 8080, '/index.html');
        const toHost = await dockerExec(a.engineId, ['sh', '-c', `nc -w 3 ${gateway} ${hostPort} </dev/null`]);
        if (egress === 'restricted') {
          assert.doesNotMatch(toB, /HTTP\/1\.[01]|\bb\n/, `b is unreachable: ${toB}`);
          assert.doesNotMatch(toHost.output, /host service/);
          assert.match(await httpGet(a.engineId, '169.254.169.254', 80), /can't connect|refused|unreachable/i);
        } else {
          assert.match(toB, served, 'b is reachable');
          assert.equal(toHost.output, 'host service', 'the host service answered a');
        }
      });
    });
  }
});
