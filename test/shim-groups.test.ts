import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { readFile } from 'node:fs/promises';
import { DockerEngine } from '../host/engine.js';
import { runningShims, SHIM_GROUP_ANNOTATION, SHIM_GROUP_ENV, wrapperScript } from '../host/shim-groups.js';
import { type PrivateEngine, startPrivateEngine } from './support/engine.js';
import { startTestDaemon, type TestDaemon } from './support/host.js';

interface Created {
  name: string;
  engineId: string;
}

const until = async (what: string, fn: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
};

/** The shims of one private engine: its containerd's socket is under the engine's own exec root. */
async function shimsOf(engine: PrivateEngine): Promise<{ pid: number; args: string }[]> {
  return (await runningShims()).filter((p) => p.args.includes(`${engine.dir}/exec/`) && !/\sstart$/.test(p.args));
}

/** Shim pid -> container engine ids it serves (a container's init is a child of the shim serving it). */
async function membersByShim(engine: PrivateEngine, docker: DockerEngine, ids: string[]): Promise<Map<number, string[]>> {
  const byShim = new Map<number, string[]>();
  for (const s of await shimsOf(engine)) byShim.set(s.pid, []);
  for (const id of ids) {
    const pid = (await docker.docker.getContainer(id).inspect()).State.Pid;
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    byShim.get(ppid)?.push(id);
  }
  return byShim;
}

describe('shared shims: containers grouped into one containerd shim per HOODY_SHIM_GROUP_SIZE', () => {
  let engine: PrivateEngine | undefined;
  let d: TestDaemon | undefined;
  let docker: DockerEngine;
  const create = async (name: string): Promise<Created> => {
    await d!.client.call('POST', '/v1/containers', { name });
    return d!.client.call<Created>('GET', `/v1/containers/${name}`);
  };
  before(async () => {
    engine = await startPrivateEngine('overlay2', { shims: true });
    docker = new DockerEngine(engine.socket);
    d = await startTestDaemon({ HOODY_DOCKER_SOCKET: engine.socket, HOODY_SHIM_GROUP_SIZE: '3' });
  });
  after(async () => {
    await d?.destroy().catch(() => undefined);
    await engine?.destroy();
  });

  test('four containers run in two shims (3 + 1); exec, stop and start of a member work; a group left empty stops its shim', async () => {
    const made: Created[] = [];
    for (const n of ['a', 'b', 'c', 'e']) made.push(await create(n));
    const ids = made.map((m) => m.engineId);
    const groups = new Set<string>();
    for (const id of ids) {
      const env = (await docker.docker.getContainer(id).inspect()).Config.Env ?? [];
      const g = env.find((v) => v.startsWith(`${SHIM_GROUP_ENV}=`));
      assert.ok(g, `${id} carries its group`);
      groups.add(g);
    }
    assert.equal(groups.size, 2, 'three in the first group, the fourth opens a second');
    const byShim = await membersByShim(engine!, docker, ids);
    assert.deepEqual([...byShim.values()].map((m) => m.length).sort(), [1, 3], `one shim per group: ${JSON.stringify([...byShim])}`);
    const host = await d!.client.call<{ shims: { configuredSize: number; grouping: boolean; groups: number } }>('GET', '/v1/host');
    assert.deepEqual(host.shims, { configuredSize: 3, grouping: true, groups: 2 });
    assert.match((await d!.hoody(['host', 'info'])).stdout, /shims: +shared, up to 3 containers each \(2 groups\)/);

    const viaEngine = await docker.exec(ids[1]!, { cmd: ['echo', 'grouped'], user: 'root', timeoutMs: 10_000 });
    assert.equal(viaEngine.output.trim(), 'grouped', 'docker exec in a grouped member');

    // The fourth is alone in its group: stopping it stops its shim; starting it opens one again.
    const alone = [...byShim.values()].find((m) => m.length === 1)![0]!;
    const name = made.find((m) => m.engineId === alone)!.name;
    await d!.client.call('POST', `/v1/containers/${name}/stop`);
    await until('the empty group to stop its shim', async () => (await shimsOf(engine!)).length === 1);
    await d!.client.call('POST', `/v1/containers/${name}/start`);
    assert.equal((await shimsOf(engine!)).length, 2);
    assert.ok((await docker.docker.getContainer(alone).inspect()).State.Running);
    for (const m of made) await d!.client.call('DELETE', `/v1/containers/${m.name}`);
    await until('every shim to exit with its last member', async () => (await shimsOf(engine!)).length === 0);
  });

  test('a new member joins a group with a running member, never one whose members all stopped; stop and create interleaved', async () => {
    const groupOf = async (id: string) =>
      ((await docker.docker.getContainer(id).inspect()).Config.Env ?? []).find((v) => v.startsWith(`${SHIM_GROUP_ENV}=`));
    const first = await create('r0');
    for (let i = 1; i <= 5; i++) {
      // r0 runs when the create chooses, so rI joins r0's group while r0 stops (its shim may be shutting down).
      const [made] = await Promise.all([create(`r${i}`), d!.client.call('POST', '/v1/containers/r0/stop')]);
      assert.ok((await docker.docker.getContainer(made.engineId).inspect()).State.Running, `r${i} runs`);
      assert.equal(await groupOf(made.engineId), await groupOf(first.engineId), `r${i} joined r0's group`);
      await d!.client.call('POST', '/v1/containers/r0/start');
      await d!.client.call('DELETE', `/v1/containers/r${i}`);
    }
    // A group with no running member may be shutting its shim down: a new container goes elsewhere.
    await d!.client.call('POST', '/v1/containers/r0/stop');
    const next = await create('r9');
    assert.notEqual(await groupOf(next.engineId), await groupOf(first.engineId));
    await d!.client.call('POST', '/v1/containers/r0/start');
    assert.ok((await docker.docker.getContainer(first.engineId).inspect()).State.Running);
    for (const n of ['r0', 'r9']) await d!.client.call('DELETE', `/v1/containers/${n}`);
  });

  test("a shim killed takes down its own group only, and the engine's restart policy brings the group back", async () => {
    const made: Created[] = [];
    for (const n of ['k1', 'k2', 'k3', 'k4', 'k5']) made.push(await create(n));
    const ids = made.map((m) => m.engineId);
    const byShim = await membersByShim(engine!, docker, ids);
    const [victim, members] = [...byShim].find(([, m]) => m.length === 3)!;
    const others = ids.filter((id) => !members.includes(id));
    const startedAt = async (id: string) => (await docker.docker.getContainer(id).inspect()).State.StartedAt;
    const before = new Map(await Promise.all(ids.map(async (id) => [id, await startedAt(id)] as const)));
    process.kill(victim, 'SIGKILL');
    await until('the killed group to run again', async () => {
      for (const id of members) {
        const s = (await docker.docker.getContainer(id).inspect()).State;
        if (!s.Running || s.StartedAt === before.get(id)) return false;
      }
      return true;
    }, 60_000);
    for (const id of others) assert.equal(await startedAt(id), before.get(id), 'the other group never stopped');
    const after = await membersByShim(engine!, docker, ids);
    assert.deepEqual([...after.values()].map((m) => m.length).sort(), [2, 3], 'the group came back into one new shim');
    for (const m of made) await d!.client.call('DELETE', `/v1/containers/${m.name}`);
  });

  test('the wrapper only copies a group name it can trust, and runs the real shim with the same arguments', () => {
    const text = wrapperScript('/usr/bin/containerd-shim-runc-v2', '/usr/bin/jq');
    assert.match(text, /exec \/usr\/bin\/containerd-shim-runc-v2 "\$@"/);
    assert.match(text, new RegExp(`annotations\\["${SHIM_GROUP_ANNOTATION.replace(/\./g, '\\.')}"\\]`));
    assert.ok(text.includes('test("^[a-z0-9][a-z0-9-]{0,62}$")'), 'a name with anything but a-z, 0-9 and - is left out');
  });
});

describe('shared shims: an engine started without the wrapper', () => {
  let engine: PrivateEngine | undefined;
  let d: TestDaemon | undefined;
  before(async () => {
    engine = await startPrivateEngine('overlay2');
    d = await startTestDaemon({ HOODY_DOCKER_SOCKET: engine.socket, HOODY_SHIM_GROUP_SIZE: '8' });
  });
  after(async () => {
    await d?.destroy().catch(() => undefined);
    await engine?.destroy();
  });

  test('gets no group: one shim per container, no group in its env, a warning in the log', async () => {
    const docker = new DockerEngine(engine!.socket);
    for (const name of ['p1', 'p2']) await d!.client.call('POST', '/v1/containers', { name });
    for (const name of ['p1', 'p2']) {
      const c = await d!.client.call<Created>('GET', `/v1/containers/${name}`);
      const env = (await docker.docker.getContainer(c.engineId).inspect()).Config.Env ?? [];
      assert.ok(!env.some((v) => v.startsWith(`${SHIM_GROUP_ENV}=`)), 'no group without the wrapper');
    }
    assert.equal((await shimsOf(engine!)).length, 2);
    const log = await readFile(`${d!.stateDir}/hoodyd.log`, 'utf8').catch(() => '');
    assert.match(log, /not started with hoody's shim wrapper/);
    assert.match((await d!.hoody(['host', 'info'])).stdout, /shims: +one per container: the engine was started without hoody's shim wrapper/);
  });
});
