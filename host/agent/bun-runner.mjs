// hoody's Bun runner, mounted read-only at /.hoody/bun-runner.mjs in every container. hoodyd starts it (through the
// command agent, as the caller's user) to run one exec script, and talks to it over the exec socket hoodyd listens on
// (/.hoody/exec.sock): one JSON message per line, byte strings as {"$b64": "..."}. The daemon side and the protocol
// are in containers/exec/bun-runtime.ts and bun-channel.ts. Host calls (relative fetch, files.*, acme.order) go to
// hoodyd, which serves them with the authority of the request's caller; the script never holds a token.
const env = process.env;
const sockPath = env.HOODY_EXEC_SOCK;
const runKey = env.HOODY_RUN;
const script = env.HOODY_SCRIPT;
const mode = env.HOODY_MODE;
for (const k of ['HOODY_EXEC_SOCK', 'HOODY_RUN', 'HOODY_SCRIPT', 'HOODY_MODE']) delete env[k];

// Which request a console line or host call belongs to: AsyncLocalStorage for a persistent script's concurrent
// requests; a serverless process has one request (and skips the ~3 ms node:async_hooks costs at start).
const current =
  mode === 'persistent'
    ? new (await import('node:async_hooks')).AsyncLocalStorage()
    : {
        id: undefined,
        getStore() {
          return this.id;
        },
        async run(id, fn) {
          this.id = id;
          return fn();
        },
      };
const toB64 = (u) => ({ $b64: Buffer.from(u.buffer, u.byteOffset, u.byteLength).toString('base64') });
const replacer = (_k, v) => (v instanceof Uint8Array ? toB64(v) : v instanceof ArrayBuffer ? toB64(new Uint8Array(v)) : v);
const reviver = (_k, v) => (v && typeof v === 'object' && typeof v.$b64 === 'string' && Object.keys(v).length === 1 ? new Uint8Array(Buffer.from(v.$b64, 'base64')) : v);

// Bun's own socket, not node:net (whose import alone costs ~15 ms of every serverless start).
let pending = [];
const unsent = [];
let closing = null;
const sock = await Bun.connect({
  unix: sockPath,
  socket: {
    data(_s, chunk) {
      let at = chunk.indexOf(10);
      if (at < 0) {
        pending.push(Buffer.from(chunk));
        return;
      }
      let from = 0;
      while (at >= 0) {
        pending.push(chunk.subarray(from, at));
        const line = Buffer.concat(pending).toString('utf8');
        pending = [];
        onMessage(JSON.parse(line, reviver));
        from = at + 1;
        at = chunk.indexOf(10, from);
      }
      if (from < chunk.length) pending.push(Buffer.from(chunk.subarray(from)));
    },
    drain: () => flush(),
    close: () => process.exit(0), // hoodyd stopped us, or went away
    error: () => process.exit(1),
  },
});
function flush() {
  while (unsent.length > 0) {
    const data = unsent[0];
    const n = sock.write(data);
    if (n < data.length) {
      unsent[0] = data.subarray(Math.max(0, n));
      return;
    }
    unsent.shift();
  }
  if (closing) closing();
}
function send(m) {
  unsent.push(Buffer.from(`${JSON.stringify(m, replacer)}\n`));
  if (unsent.length === 1) flush();
}
/** Ends once everything sent is written. */
function finish(code) {
  closing = () => {
    sock.end();
    process.exit(code);
  };
  flush();
}

// ---- host calls

const waiting = new Map();
let seq = 0;
function host(op, args) {
  const id = current.getStore();
  if (id === undefined) return Promise.reject(new Error(`${op} is only available while a request is handled`));
  return new Promise((resolve, reject) => {
    const call = ++seq;
    waiting.set(call, { resolve, reject });
    send({ t: 'call', id, call, op, args });
  });
}

globalThis.files = Object.freeze({
  read: (path) => host('files.read', { path: String(path) }),
  write: (path, data) =>
    host('files.write', { path: String(path), data: data instanceof Uint8Array || typeof data === 'string' ? data : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : JSON.stringify(data) }),
  list: (path = '') => host('files.list', { path: String(path) }),
  delete: (path) => host('files.delete', { path: String(path) }),
});
globalThis.acme = Object.freeze({
  order: (domains) => host('acme.order', { domains: Array.isArray(domains) ? domains.map(String) : [String(domains)] }),
});

const realFetch = globalThis.fetch;
const NULL_BODY = new Set([101, 103, 204, 205, 304]);
/** A relative URL is this container's own API, reached through hoodyd; anything else is Bun's own fetch. */
globalThis.fetch = async (input, init = {}) => {
  const url = typeof input === 'string' ? input : input instanceof URL ? input.href : null;
  if (url === null || !url.startsWith('/') || url.startsWith('//') || url.startsWith('/\\')) return realFetch(input, init);
  const headers = Object.fromEntries(new Headers(init.headers ?? {}));
  let body = init.body ?? null;
  if (body !== null && typeof body !== 'string' && !(body instanceof Uint8Array)) body = new Uint8Array(await new Response(body).arrayBuffer());
  const r = await host('fetch', { url, method: init.method ?? 'GET', headers, body });
  const res = new Response(NULL_BODY.has(r.status) ? null : (r.text ?? r.bytes ?? null), { status: r.status, statusText: r.statusText || '', headers: r.headers });
  Object.defineProperty(res, 'url', { value: r.url });
  return res;
};

// ---- console: lines go to hoodyd, with the request they belong to (0: none)

const text = (v) => (typeof v === 'string' ? v : Bun.inspect(v));
for (const level of ['log', 'info', 'warn', 'error', 'debug']) {
  console[level] = (...args) => send({ t: 'log', id: current.getStore() ?? 0, level, text: args.map(text).join(' ') });
}

// ---- answers, encoded as the isolate's prelude encodes them (containers/exec/prelude.ts)

function bytesOf(v) {
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  return null;
}
function isResponseLike(v) {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return false;
  if (typeof v.status !== 'number') return false;
  const keys = Object.keys(v);
  return keys.every((k) => k === 'status' || k === 'statusText' || k === 'headers' || k === 'body') && ('headers' in v || 'body' in v);
}
async function encode(v) {
  if (v instanceof Response) return { kind: 'response', status: v.status, headers: Object.fromEntries(v.headers), body: new Uint8Array(await v.arrayBuffer()) };
  if (v === undefined) return { kind: 'empty' };
  if (isResponseLike(v)) {
    const headers = Object.fromEntries(new Headers(v.headers ?? {}));
    let body = v.body == null ? null : v.body;
    if (body !== null && typeof body !== 'string') {
      const bytes = bytesOf(body);
      if (bytes) body = bytes;
      else {
        body = JSON.stringify(body);
        if (!('content-type' in headers)) headers['content-type'] = 'application/json; charset=utf-8';
      }
    }
    return { kind: 'response', status: v.status, headers, body };
  }
  const bytes = bytesOf(v);
  if (bytes) return { kind: 'bytes', body: bytes };
  const json = JSON.stringify(v);
  return json === undefined ? { kind: 'empty' } : { kind: 'json', body: json };
}
function message(e) {
  if (e instanceof Error) return e.message || e.name;
  try {
    return typeof e === 'string' ? e : (JSON.stringify(e) ?? String(e));
  } catch {
    return String(e);
  }
}
function deepFreeze(v) {
  if (v && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const k of Object.keys(v)) deepFreeze(v[k]);
  }
  return v;
}
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

async function answer(id, work) {
  const before = cpu();
  let outcome;
  try {
    const value = await current.run(id, work);
    outcome = await encode(value);
  } catch (e) {
    send({ t: 'failed', id, message: message(e), cpuMs: cpu() - before, rss: process.memoryUsage().rss });
    return;
  }
  send({ t: 'done', id, outcome, cpuMs: cpu() - before, rss: process.memoryUsage().rss });
}

// ---- the two modes

let handler = null;
async function onMessage(m) {
  if (m.t === 'reply') {
    const w = waiting.get(m.call);
    if (!w) return;
    waiting.delete(m.call);
    if (m.ok) w.resolve(m.value);
    else w.reject(new Error(String(m.error)));
  } else if (m.t === 'run') {
    // serverless: hoodyd sends the module (imports + the body as a function of request); it loads from the
    // script's own path, so its imports resolve against /scripts/node_modules.
    const filter = new RegExp(`^${script.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
    Bun.plugin({ name: 'hoody', setup: (b) => b.onLoad({ filter }, () => ({ contents: m.module, loader: script.endsWith('.js') ? 'js' : 'ts' })) });
    await answer(m.id, async () => (await import(script)).default.call(globalThis, deepFreeze(m.request)));
    finish(0);
  } else if (m.t === 'request' && handler) {
    const init = { method: m.method, headers: m.headers };
    if (m.body && m.method !== 'GET' && m.method !== 'HEAD') init.body = m.body;
    const req = new Request(m.url, init);
    void answer(m.id, () => handler.fetch(req));
  }
}

send({ t: 'hello', run: runKey, pid: process.pid });
if (mode === 'persistent') {
  try {
    const mod = await import(script);
    if (!mod.default || typeof mod.default.fetch !== 'function') throw new Error('a persistent script exports default { fetch(request) { … } }');
    handler = mod.default;
    send({ t: 'ready', rss: process.memoryUsage().rss });
  } catch (e) {
    send({ t: 'fatal', message: message(e) });
    finish(1);
  }
}
