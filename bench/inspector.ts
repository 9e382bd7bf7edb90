import { readFile } from 'node:fs/promises';
import { execa } from 'execa';

/** The daemon's V8 heap right after forced full GCs (bytes), read over its inspector. */
export interface HeapAfterGc {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
}

/** The inspector's WebSocket URL a daemon started with `--inspect=127.0.0.1:0` printed in its log. */
export async function inspectorUrl(logFile: string, timeoutMs = 5000): Promise<string | null> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const text = await readFile(logFile, 'utf8').catch(() => '');
    const m = /Debugger listening on (ws:\/\/127\.0\.0\.1:\d+\/[\w-]+)/.exec(text);
    if (m) return m[1]!;
    await new Promise((r) => setTimeout(r, 100));
  }
  return null;
}

// Runs in a child `node --experimental-websocket` (Node 20 has WebSocket only behind that flag).
const CLIENT = `
const ws = new WebSocket(process.argv[1]);
let id = 0;
const pending = new Map();
const send = (method, params = {}) => new Promise((resolve) => { const i = ++id; pending.set(i, resolve); ws.send(JSON.stringify({ id: i, method, params })); });
ws.onmessage = (e) => { const m = JSON.parse(e.data); const r = pending.get(m.id); if (r) { pending.delete(m.id); r(m); } };
ws.onerror = () => process.exit(3);
ws.onopen = async () => {
  await send('HeapProfiler.enable');
  await send('HeapProfiler.collectGarbage');
  await send('HeapProfiler.collectGarbage');
  await send('HeapProfiler.disable');
  const r = await send('Runtime.evaluate', { expression: 'JSON.stringify(process.memoryUsage())', returnByValue: true });
  process.stdout.write(String(r.result && r.result.result && r.result.result.value));
  ws.close();
  process.exit(0);
};
setTimeout(() => process.exit(2), 20000);
`;

/** Forces two full GCs in the daemon and returns process.memoryUsage() from inside it; null when unreachable. */
export async function gcAndMeasure(url: string): Promise<HeapAfterGc | null> {
  const r = await execa(process.execPath, ['--experimental-websocket', '--no-warnings', '-e', CLIENT, url], { reject: false, timeout: 30_000, cleanup: false });
  if (r.exitCode !== 0) return null;
  try {
    return JSON.parse(String(r.stdout)) as HeapAfterGc;
  } catch {
    return null;
  }
}
