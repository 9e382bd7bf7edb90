/**
 * The exec budget's CPU share (issue 10.6): CPU a container's runs used past its rate holds its next runs back
 * until it has drained, without touching other containers; a run held past the queue wait is refused with why.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DEFAULT_BUDGET, ExecBudget } from '../containers/exec/budget.js';
import { HoodyError } from '../containers/errors.js';

const limits = { ...DEFAULT_BUDGET, containerCpu: 1, cpuBurstMs: 100, queueWaitMs: 2000 };

describe('exec budget: CPU per container', () => {
  test('a container that used 400 ms of CPU past a 100 ms burst waits about 300 ms; another container does not', async () => {
    const budget = new ExecBudget(limits);
    const release = await budget.acquire('a', 64);
    release(400);
    const t0 = performance.now();
    const b = await budget.acquire('b', 64);
    assert.ok(performance.now() - t0 < 50, 'b is not held back by a');
    b(0);
    const again = await budget.acquire('a', 64);
    const waited = performance.now() - t0;
    assert.ok(waited >= 250, `a waited ${waited.toFixed(0)} ms, expected about 300`);
    again(0);
    assert.equal(budget.cpuDebt('a') <= 100, true);
  });

  test('past the queue wait the run is refused HOODY_EXEC_BUSY naming the CPU budget', async () => {
    const budget = new ExecBudget({ ...limits, queueWaitMs: 50 });
    (await budget.acquire('a', 64))(5000);
    await assert.rejects(budget.acquire('a', 64), (err: unknown) => {
      assert.ok(err instanceof HoodyError);
      assert.equal(err.code, 'HOODY_EXEC_BUSY');
      assert.match(err.message, /CPU budget of 1 core\(s\) spent/);
      return true;
    });
  });

  test('no CPU budget (0): used CPU never holds a run back', async () => {
    const budget = new ExecBudget({ ...limits, containerCpu: 0 });
    (await budget.acquire('a', 64))(60_000);
    const t0 = performance.now();
    (await budget.acquire('a', 64))(0);
    assert.ok(performance.now() - t0 < 50);
  });

});

describe('exec budget: queue per container', () => {
  test('a container that arrives while the host is full may queue its unused run slots too, and no more', async () => {
    const budget = new ExecBudget({ ...limits, containerCpu: 0, hostRuns: 4, containerRuns: 4, containerQueue: 8 });
    const held = await Promise.all([0, 1, 2, 3].map(() => budget.acquire('a', 64)));
    // each of b's runs ends as soon as it is let in, so its queue drains four at a time
    const late = Array.from({ length: 12 }, () => budget.acquire('b', 64).then((release) => setImmediate(() => release(0))));
    await assert.rejects(budget.acquire('b', 64), (err: unknown) => {
      assert.ok(err instanceof HoodyError);
      assert.match(err.message, /queue full/);
      return true;
    });
    for (const release of held) release(0);
    assert.equal((await Promise.all(late)).length, 12, 'all twelve of b ran once a freed the host');
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(budget.inUse(), { runs: 0, memoryMb: 0 });
  });
});
