import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { HOODY, HOODYD } from './support/host.js';

const hoody = (args: string[], env: NodeJS.ProcessEnv = {}) => execa(process.execPath, [HOODY, ...args], { env: { ...process.env, ...env }, reject: false });

describe('operator tooling: a systemd unit checked by systemd-analyze, and shell completion from the commands as built', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hoody-unit-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('service install writes a unit that systemd-analyze verify accepts, with the shell\'s HOODY_* settings; uninstall removes it', async () => {
    const env = { HOODY_STATE_DIR: '/var/lib/hoody-svc test', HOODY_HTTP_PORT: '8080', HOODY_DOMAIN: 'example.test' };
    const r = await hoody(['service', 'install', '--unit-dir', dir, '--no-start'], env);
    assert.equal(r.exitCode, 0, r.stderr);
    const path = join(dir, 'hoodyd.service');
    const unit = await readFile(path, 'utf8');
    assert.ok(unit.includes(`ExecStart=${process.execPath} --no-node-snapshot ${HOODYD}\n`), unit);
    assert.match(unit, /^Environment="HOODY_STATE_DIR=\/var\/lib\/hoody-svc test"$/m);
    assert.match(unit, /^Environment="HOODY_HTTP_PORT=8080"$/m);
    assert.match(unit, /^Restart=on-failure$/m);
    assert.match(unit, /^KillMode=process$/m);
    assert.match(unit, /^After=.*docker\.service/m);
    assert.doesNotMatch(unit, /^(PrivateTmp|ProtectSystem|ProtectHome|NoNewPrivileges|SystemCallFilter)=/m);
    const verify = await execa('systemd-analyze', ['verify', path], { reject: false, all: true });
    assert.equal(verify.exitCode, 0);
    assert.equal(verify.all, '', 'systemd-analyze has nothing to say about the unit');
    // The check can fail: the same unit with a bad line is reported.
    const broken = join(dir, 'broken.service');
    await writeFile(broken, unit.replace('Restart=on-failure', 'Restart=sometimes'));
    const bad = await execa('systemd-analyze', ['verify', broken], { reject: false, all: true });
    assert.match(bad.all ?? '', /restart specifier/);
    const un = await hoody(['service', 'uninstall', '--unit-dir', dir]);
    assert.equal(un.exitCode, 0, un.stderr);
    assert.equal(existsSync(path), false);
  });

  test('completion bash completes commands, subcommands and options; an unknown shell is a usage error', async () => {
    const script = (await hoody(['completion', 'bash'])).stdout;
    const complete = async (words: string[]) => {
      const probe = `${script}\nCOMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _hoody; echo "\${COMPREPLY[*]}"`;
      return (await execa('bash', ['-c', probe])).stdout.trim();
    };
    assert.equal(await complete(['hoody', 'rec']), 'recover');
    assert.equal(await complete(['hoody', 'snapshot', 'r']), 'rm restore');
    assert.equal(await complete(['hoody', 'snapshot', 'schedule', 'web', '--e']), '--every');
    assert.equal(await complete(['hoody', '--socket', '/x', 'service', 'in']), 'install');
    const bad = await hoody(['completion', 'fish']);
    assert.equal(bad.exitCode, 2);
    assert.match(bad.stderr, /no completion for fish/);
  });
});
