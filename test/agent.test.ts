import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { pino } from 'pino';
import { AgentCommands, type CommandTarget } from '../containers/agent/commands.js';
import { NO_EXTRAS } from '../containers/context.js';
import { createContainer } from '../containers/provision.js';
import type { ContainerRow } from '../containers/store.js';
import { buildCommands, type Commands } from '../daemon/commands.js';
import type { ExecOptions } from '../host/engine.js';
import { type TestContext, testContext } from './support/host.js';

const log = pino({ level: process.env.HOODY_TEST_LOG ?? 'warn' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// What a process is, as the kernel sees it: ids, groups, every capability set, seccomp, no-new-privileges,
// its cgroup, its AppArmor label, its environment's HOME and USER, its working directory.
const IDENTITY = `id -u; id -g; id -G; grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status
cat /proc/self/cgroup; cat /proc/self/attr/current 2>/dev/null; echo "HOME=$HOME USER=$USER"; pwd`;

// A stand-in for the agent a tenant could run instead of hoody's: says hello, then either sends a frame
// larger than hoodyd accepts or never answers a run.
const FAKE_C = `#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <stdint.h>
int main(int argc, char **argv) {
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  strcpy(a.sun_path, "/.hoody/hoody.sock");
  if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) return 1;
  unsigned char hello[10] = {1, 0, 0, 0, 'H', 0, 0, 0, 0, '1'};
  write(s, hello, 10);
  char buf[4096];
  if (read(s, buf, sizeof buf) <= 0) return 2; /* a run arrived */
  if (strcmp(argv[1], "huge") == 0) {
    unsigned char big[9] = {0xff, 0xff, 0xff, 0x7f, 'O', 1, 0, 0, 0};
    write(s, big, 9);
  }
  sleep(30);
  return 0;
}
`;

describe('the command agent inside real containers', () => {
  let t: TestContext;
  let cmds: Commands;
  let agent: AgentCommands;
  let a: CommandTarget;
  let b: CommandTarget;
  let old: CommandTarget;
  let rowA: ContainerRow;

  const target = (row: ContainerRow): CommandTarget => ({ name: row.name, engineId: row.engineId! });
  const docker = async (row: CommandTarget, script: string, opts: Partial<ExecOptions> = {}) =>
    t.ctx.engine.exec(row.engineId, { cmd: ['sh', '-c', script], user: 'root', ...opts });
  const viaAgent = async (row: CommandTarget, script: string, opts: Partial<ExecOptions> = {}) =>
    agent.exec(row, { cmd: ['sh', '-c', script], user: 'root', ...opts });
  const agentPids = async (row: CommandTarget) =>
    (await docker(row, 'for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = hoody-agent ] && basename $p; done; true')).output
      .split('\n')
      .filter(Boolean);

  before(async () => {
    t = await testContext();
    cmds = await buildCommands(t.config, t.ctx, log);
    assert.ok(cmds.commands instanceof AgentCommands, 'the agent was built (gcc and a static libc are installed by up.sh)');
    agent = cmds.commands;
    // Made before the daemon adds the agent's mount: a container from an older hoody.
    old = target((await createContainer(t.ctx, { name: 'agent-old' })).row);
    t.ctx.specExtras = (name) => cmds.extend(name, NO_EXTRAS());
    rowA = (await createContainer(t.ctx, { name: 'agent-a' })).row;
    a = target(rowA);
    b = target((await createContainer(t.ctx, { name: 'agent-b' })).row);
    const users = `echo 'alice:x:1000:1000::/home/alice:/bin/sh' >> /etc/passwd && echo 'alice:x:1000:' >> /etc/group &&
      echo 'staff2:x:1500:bob,alice' >> /etc/group && mkdir -p /home/alice && chown 1000:1000 /home/alice`;
    for (const c of [a, b]) assert.equal((await docker(c, users)).exitCode, 0);
  });
  after(async () => {
    await agent?.close();
    await t?.cleanup();
  });

  test('a command gets the same user, groups, capabilities, seccomp, no-new-privileges and cgroup as docker exec', async () => {
    for (const user of ['root', 'alice', '1000']) {
      const env = [`USER=${user}`];
      const byDocker = await docker(a, IDENTITY, { user, env });
      const byAgent = await viaAgent(a, `${IDENTITY}; cat /proc/$PPID/comm`, { user, env });
      assert.equal(byDocker.exitCode, 0, byDocker.output);
      assert.equal(byAgent.exitCode, 0, byAgent.output);
      const lines = byAgent.output.trimEnd().split('\n');
      assert.equal(lines.pop(), 'hoody-agent', 'the command was started by the agent, not by the engine');
      assert.equal(`${lines.join('\n')}\n`, byDocker.output, `identity of ${user}`);
    }
    const alice = await viaAgent(a, 'id -G; echo $HOME', { user: 'alice' });
    assert.equal(alice.output, '1000 1500\n/home/alice\n');
    const missing = await viaAgent(a, 'true', { user: 'nobody-here' }).then(
      () => 'ran',
      (err: Error) => err.message,
    );
    assert.match(missing, /unable to find user nobody-here/);
    assert.equal(agent.connected, 1);
  });

  test('exit codes, a signal, the output cap and a timeout that kills what the command started', async () => {
    assert.equal((await viaAgent(a, 'exit 3')).exitCode, 3);
    assert.equal((await viaAgent(a, 'kill -9 $$')).exitCode, 137);
    const missing = await viaAgent(a, 'true', { cmd: ['/no/such/program'] });
    assert.equal(missing.exitCode, 127);
    assert.match(missing.output, /no\/such\/program/);
    const big = await viaAgent(a, 'head -c 100000 /dev/zero | tr "\\0" x; echo tail >&2', { maxOutputBytes: 1000 });
    assert.equal(big.exitCode, 0);
    assert.equal(big.truncated, true);
    assert.equal(big.output, 'x'.repeat(1000));
    const both = await viaAgent(a, 'echo out; echo err >&2');
    assert.equal(both.output, 'out\nerr\n');
    const env = await viaAgent(a, 'echo "$HOODY_CONTAINER $EXTRA"', { env: ['EXTRA=given'] });
    assert.equal(env.output, 'agent-a given\n', 'the container environment, with the run’s entries on top');

    const started = Date.now();
    const slow = await viaAgent(a, 'sleep 41 & sleep 42; echo never', { timeoutMs: 500 });
    assert.equal(slow.timedOut, true);
    assert.equal(slow.exitCode, null);
    assert.ok(Date.now() - started < 2500, `answered ${Date.now() - started} ms after the start`);
    await sleep(300);
    const left = await docker(a, 'for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr "\\0" " "; echo; done | grep -c "^sleep 4[12]" || true');
    assert.equal(left.output.trim(), '0', 'the command and what it started in the background are gone');
  });

  test('runs at once in one container share one agent, each container its own', async () => {
    const outs = await Promise.all(Array.from({ length: 24 }, (_, i) => viaAgent(i % 2 ? a : b, `echo run-${i}`)));
    for (const [i, o] of outs.entries()) assert.equal(o.output, `run-${i}\n`);
    assert.equal((await agentPids(a)).length, 1);
    assert.equal((await agentPids(b)).length, 1);
    assert.equal(agent.connected, 2);
  });

  test('a container made before the agent runs its commands through docker exec', async () => {
    const r = await agent.exec(old, { cmd: ['sh', '-c', 'echo old; cat /proc/$PPID/comm 2>/dev/null; true'], user: 'root' });
    assert.equal(r.exitCode, 0);
    assert.doesNotMatch(r.output, /hoody-agent/);
    assert.match(r.output, /^old\n/);
    assert.equal((await agentPids(old)).length, 0);
  });

  test('hostile: the tenant cannot change the agent or its socket, and a killed agent is started again', async () => {
    for (const attack of ['touch /.hoody/x', 'rm -f /.hoody/hoody.sock', 'echo x > /.hoody/hoody-agent', 'mv /.hoody/hoody.sock /.hoody/y', 'mount -o remount,rw /.hoody']) {
      const r = await docker(a, attack);
      assert.notEqual(r.exitCode, 0, `${attack} must fail: ${r.output}`);
    }
    assert.match((await docker(a, 'grep " /.hoody " /proc/mounts')).output, /\sro[,\s]/);
    const [pid] = await agentPids(a);
    assert.ok(pid);
    await docker(a, `kill -9 ${pid}`);
    for (let i = 0; i < 50 && agent.connected !== 1; i++) await sleep(100);
    assert.equal(agent.connected, 1, 'the dead agent’s connection is dropped');
    const again = await viaAgent(a, 'cat /proc/$PPID/comm');
    assert.equal(again.output, 'hoody-agent\n');
    const [next] = await agentPids(a);
    assert.ok(next && next !== pid, 'a new agent');
  });

  test('hostile: a fake agent only ever sees its own container’s runs and cannot hurt the daemon', async () => {
    const build = await mkdtemp(join(tmpdir(), 'hoody-fake-agent-'));
    try {
      await writeFile(join(build, 'fake.c'), FAKE_C);
      await execa('gcc', ['-static', '-O2', '-o', join(rowA.volume, 'files', 'fake'), join(build, 'fake.c')]);
    } finally {
      await rm(build, { recursive: true, force: true });
    }
    for (const mode of ['huge', 'silent']) {
      for (const pid of await agentPids(a)) await docker(a, `kill -9 ${pid}`);
      for (let i = 0; i < 50 && agent.connected !== 1; i++) await sleep(100);
      await t.ctx.engine.execDetached(a.engineId, ['/files/fake', mode], 'root');
      await sleep(300); // connected and said hello: it is now the container's agent
      const started = Date.now();
      const r = await viaAgent(a, 'echo real', { timeoutMs: 1000 }).then(
        (x) => (x.timedOut ? 'timed out' : x.output),
        (err: Error) => `refused: ${err.message}`,
      );
      if (mode === 'huge') assert.match(r, /^refused: agent frame/, 'an oversized frame drops the connection');
      else assert.equal(r, 'timed out', 'a run the fake never answers ends at its timeout plus the kill grace');
      assert.ok(Date.now() - started < 4000);
      // The other container was never affected, and this one gets a real agent again.
      assert.equal((await viaAgent(b, 'echo b')).output, 'b\n');
      await docker(a, 'for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = fake ] && kill -9 $(basename $p); done; true');
      let back = '';
      for (let i = 0; i < 50 && back !== 'hoody-agent\n'; i++) {
        back = await viaAgent(a, 'cat /proc/$PPID/comm').then((x) => x.output, () => '');
        if (back !== 'hoody-agent\n') await sleep(100);
      }
      assert.equal(back, 'hoody-agent\n', `after the ${mode} fake`);
    }
  });

  test('when hoodyd’s end closes, the agent and what it runs end too', async () => {
    const running = viaAgent(a, 'sleep 43').then(
      () => 'finished',
      (err: Error) => err.message,
    );
    await sleep(300);
    await agent.close();
    assert.match(await running, /went away/);
    await sleep(300);
    assert.deepEqual(await agentPids(a), []);
    const left = await docker(a, 'for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr "\\0" " "; echo; done | grep -c "^sleep 43" || true');
    assert.equal(left.output.trim(), '0');
  });
});
