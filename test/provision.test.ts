import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { LABEL_INSTANCE } from '../containers/context.js';
import { HoodyError } from '../containers/errors.js';
import { createContainer, removeContainer } from '../containers/provision.js';
import { Undo } from '../containers/undo.js';
import { type TestContext, testContext } from './support/host.js';

describe('undo (reverter)', () => {
  test('runs registered steps in reverse unless done() was called', async () => {
    const order: string[] = [];
    {
      await using undo = new Undo();
      undo.push('a', () => order.push('a'));
      undo.push('b', () => order.push('b'));
    }
    assert.deepEqual(order, ['b', 'a']);
    {
      await using undo = new Undo();
      undo.push('c', () => order.push('c'));
      undo.done();
    }
    assert.deepEqual(order, ['b', 'a']);
  });

  test('a failing undo step does not stop the others', async () => {
    const order: string[] = [];
    const failures: string[] = [];
    {
      await using undo = new Undo((label) => failures.push(label));
      undo.push('a', () => order.push('a'));
      undo.push('boom', () => {
        throw new Error('boom');
      });
    }
    assert.deepEqual(order, ['a']);
    assert.deepEqual(failures, ['boom']);
  });
});

describe('provisioning undoes finished steps when a later one fails', () => {
  let t: TestContext;
  before(async () => {
    t = await testContext();
  });
  after(() => t.cleanup());

  test('a namespace that fails to open leaves no engine container, volume or row', async () => {
    const { ctx } = t;
    ctx.hooks.push({
      open: async () => {
        throw new Error('namespace refused');
      },
      close: async () => undefined,
    });
    try {
      await assert.rejects(createContainer(ctx, { name: 'half' }), /namespace refused/);
    } finally {
      ctx.hooks.pop();
    }
    assert.equal(ctx.store.get('half'), undefined);
    assert.equal(existsSync(`${ctx.pool.containers}/half`), false);
    assert.deepEqual(await ctx.engine.list({ [LABEL_INSTANCE]: ctx.instance }), []);
  });

  test('a create that fails at the engine step (unknown image) removes the volume and answers 400', async () => {
    const { ctx } = t;
    const err = await createContainer(ctx, { name: 'noimg', image: 'hoody/does-not-exist' }).catch((e: unknown) => e);
    assert.ok(err instanceof HoodyError);
    assert.equal(err.code, 'HOODY_IMAGE_UNKNOWN');
    assert.equal(err.status, 400);
    assert.equal(existsSync(`${ctx.pool.containers}/noimg`), false);
    assert.equal(ctx.store.get('noimg'), undefined);
  });

  test('a second create of the same name is refused with 409 and does not touch the first', async () => {
    const { ctx } = t;
    await createContainer(ctx, { name: 'dup' });
    const err = await createContainer(ctx, { name: 'dup' }).catch((e: unknown) => e);
    assert.ok(err instanceof HoodyError);
    assert.equal(err.code, 'HOODY_NAME_TAKEN');
    assert.equal(ctx.store.get('dup')?.phase, 'ready');
    await removeContainer(ctx, 'dup');
  });
});
