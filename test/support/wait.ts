/**
 * Waits for an event instead of sleeping a fixed time: polls `probe` until it gives a truthy value (returned),
 * or throws once `timeoutMs` passed, naming what was awaited and the probe's last error, if any.
 */
export async function until<T>(
  what: string,
  probe: () => T | null | undefined | false | Promise<T | null | undefined | false>,
  opts: { timeoutMs?: number; everyMs?: number } = {},
): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown = null;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
      lastError = null;
    } catch (err) {
      lastError = err; // not there yet (e.g. a 404 thrown by a helper): try again until the deadline
    }
    if (Date.now() > deadline) {
      const why = lastError ? `; last error: ${lastError instanceof Error ? lastError.message : String(lastError)}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await new Promise((r) => setTimeout(r, opts.everyMs ?? 100));
  }
}
