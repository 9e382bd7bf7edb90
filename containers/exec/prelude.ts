/**
 * The JavaScript every script context starts with (run inside the isolate, compiled once per isolate).
 *
 * The worker makes each context ahead of its run, while the isolate is idle (contexts.ts): it puts one raw value
 * on the global, `__hoody_host(kind, ...)` (an isolated-vm Callback: a plain function whose arguments are copied,
 * so nothing of the host is reachable through it; kind 0 is a host call `(id, op, args)`, kind 1 a console line
 * `(level, text)`), and runs this. The prelude captures it in a closure, deletes it (and the built-ins that let
 * code run after its request or crash the worker), defines the script's globals (fetch, Response, Headers,
 * console, files, acme, setTimeout, TextEncoder/TextDecoder) and the non-writable `__hoody_start` the compiled
 * script calls. Its completion value is `control(op, ...)`, which the worker keeps as a Reference: op 0 answers a
 * host call `(id, ok, value)`; op 1 begins the run `(request, consoleCap)`, defining `request` (a copy, frozen).
 */
export const PRELUDE = `(function () {
'use strict';
const g = globalThis;
const hostFn = g.__hoody_host;
delete g.__hoody_host;
const call = (id, op, args) => hostFn(0, id, op, args);
const log = (level, text) => hostFn(1, level, text);
let consoleCap = 0;

const waiting = new Map();
let seq = 0;
function host(op, args) {
  return new Promise((resolve, reject) => {
    const id = ++seq;
    waiting.set(id, { resolve, reject });
    call(id, op, args);
  });
}
function settle(id, ok, value) {
  const w = waiting.get(id);
  if (!w) return;
  waiting.delete(id);
  if (ok) w.resolve(value); else w.reject(new Error(String(value)));
}

function utf8Encode(s) {
  s = String(s);
  const out = [];
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c >= 0xd800 && c < 0xe000) {
      const d = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (c < 0xdc00 && d >= 0xdc00 && d < 0xe000) { c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00); i++; }
      else c = 0xfffd;
    }
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(out);
}
function utf8Decode(b) {
  const units = [];
  let s = '';
  const cont = (k) => k < b.length && (b[k] & 0xc0) === 0x80;
  for (let i = 0; i < b.length; ) {
    const c = b[i++];
    let cp = 0xfffd;
    if (c < 0x80) cp = c;
    else if (c >= 0xc2 && c < 0xe0 && cont(i)) cp = ((c & 31) << 6) | (b[i++] & 63);
    else if (c >= 0xe0 && c < 0xf0 && cont(i) && cont(i + 1)) {
      cp = ((c & 15) << 12) | ((b[i] & 63) << 6) | (b[i + 1] & 63); i += 2;
      if (cp < 0x800 || (cp >= 0xd800 && cp < 0xe000)) cp = 0xfffd;
    } else if (c >= 0xf0 && c < 0xf5 && cont(i) && cont(i + 1) && cont(i + 2)) {
      cp = ((c & 7) << 18) | ((b[i] & 63) << 12) | ((b[i + 1] & 63) << 6) | (b[i + 2] & 63); i += 3;
      if (cp < 0x10000 || cp > 0x10ffff) cp = 0xfffd;
    }
    if (cp >= 0x10000) { cp -= 0x10000; units.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 1023)); }
    else units.push(cp);
    if (units.length >= 8192) { s += String.fromCharCode.apply(null, units); units.length = 0; }
  }
  return s + String.fromCharCode.apply(null, units);
}
function bytesOf(v) {
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  return null;
}

class TextEncoder {
  get encoding() { return 'utf-8'; }
  encode(s = '') { return utf8Encode(s); }
}
class TextDecoder {
  get encoding() { return 'utf-8'; }
  decode(b) { return b == null ? '' : utf8Decode(bytesOf(b) || new Uint8Array(0)); }
}

class Headers {
  #m = new Map();
  constructor(init) {
    if (init == null) return;
    if (init instanceof Headers) init.forEach((v, k) => this.set(k, v));
    else if (Array.isArray(init)) for (const [k, v] of init) this.append(k, v);
    else if (typeof init === 'object') for (const k of Object.keys(init)) this.set(k, init[k]);
  }
  get(k) { const v = this.#m.get(String(k).toLowerCase()); return v === undefined ? null : v; }
  set(k, v) { this.#m.set(String(k).toLowerCase(), String(v)); }
  append(k, v) {
    const key = String(k).toLowerCase(), cur = this.#m.get(key);
    this.#m.set(key, cur === undefined ? String(v) : cur + ', ' + String(v));
  }
  has(k) { return this.#m.has(String(k).toLowerCase()); }
  delete(k) { this.#m.delete(String(k).toLowerCase()); }
  forEach(fn, self) { for (const [k, v] of this.#m) fn.call(self, v, k, this); }
  keys() { return this.#m.keys(); }
  values() { return this.#m.values(); }
  entries() { return this.#m.entries(); }
  [Symbol.iterator]() { return this.#m.entries(); }
  toJSON() { return Object.fromEntries(this.#m); }
}

const bodies = new WeakMap();
class Response {
  constructor(body = null, init = {}) {
    const status = init.status === undefined ? 200 : Number(init.status);
    if (!Number.isInteger(status) || status < 200 || status > 599) throw new RangeError('Response status must be 200-599, got ' + init.status);
    this.status = status;
    this.statusText = init.statusText === undefined ? '' : String(init.statusText);
    this.headers = new Headers(init.headers);
    this.ok = status >= 200 && status < 300;
    this.url = init.url === undefined ? '' : String(init.url);
    this.redirected = false;
    this.type = 'default';
    let b = body;
    if (b != null && typeof b !== 'string' && !bytesOf(b)) b = String(b);
    if (typeof b === 'string' && !this.headers.has('content-type')) this.headers.set('content-type', 'text/plain;charset=UTF-8');
    bodies.set(this, b == null ? null : typeof b === 'string' ? b : bytesOf(b));
  }
  static json(data, init = {}) {
    const r = new Response(JSON.stringify(data), init);
    if (!init.headers || !new Headers(init.headers).has('content-type')) r.headers.set('content-type', 'application/json');
    return r;
  }
  get bodyUsed() { return false; }
  async text() { const b = bodies.get(this); return b == null ? '' : typeof b === 'string' ? b : utf8Decode(b); }
  async json() { return JSON.parse(await this.text()); }
  async arrayBuffer() {
    const b = bodies.get(this);
    const u = b == null ? new Uint8Array(0) : typeof b === 'string' ? utf8Encode(b) : b;
    return u.buffer.slice(u.byteOffset, u.byteOffset + u.byteLength);
  }
  clone() {
    const r = new Response(null, { status: this.status, statusText: this.statusText, headers: this.headers, url: this.url });
    bodies.set(r, bodies.get(this));
    return r;
  }
}

async function fetch(input, init = {}) {
  const url = typeof input === 'string' ? input : input && typeof input === 'object' ? String(input.url || input.href || input) : String(input);
  const method = String(init.method || 'GET').toUpperCase();
  const headers = new Headers(init.headers).toJSON();
  let body = init.body == null ? null : init.body;
  if (body !== null && typeof body !== 'string') {
    const bytes = bytesOf(body);
    if (bytes) body = new Uint8Array(bytes);
    else { body = JSON.stringify(body); if (!('content-type' in headers)) headers['content-type'] = 'application/json'; }
  }
  const r = await host('fetch', { url, method, headers, body });
  const res = new Response(null, { status: r.status, statusText: r.statusText, headers: r.headers, url: r.url });
  bodies.set(res, r.text !== undefined ? r.text : r.bytes);
  return res;
}

let consoleUsed = 0, consoleCut = false;
function fmt(v) {
  if (typeof v === 'string') return v;
  if (v instanceof Error) return v.stack || String(v);
  if (typeof v === 'bigint' || typeof v === 'symbol' || typeof v === 'function') return String(v);
  try { const s = JSON.stringify(v); return s === undefined ? String(v) : s; } catch { return String(v); }
}
const consoleObject = {};
for (const level of ['log', 'info', 'warn', 'error', 'debug']) {
  consoleObject[level] = (...args) => {
    if (consoleCut) return;
    const text = args.map(fmt).join(' ');
    consoleUsed += text.length + 1;
    if (consoleUsed > consoleCap) consoleCut = true;
    log(level, text);
  };
}

const timers = new Set();
let timerSeq = 0;
function setTimeout(fn, ms = 0, ...args) {
  const id = ++timerSeq;
  timers.add(id);
  host('sleep', { ms: Math.max(0, Number(ms) || 0) }).then(() => {
    if (!timers.delete(id)) return;
    try { fn(...args); } catch (e) { consoleObject.error(e); }
  }, () => timers.delete(id));
  return id;
}
function clearTimeout(id) { timers.delete(id); }
function setInterval(fn, ms = 0, ...args) {
  const id = ++timerSeq;
  timers.add(id);
  const tick = () => host('sleep', { ms: Math.max(4, Number(ms) || 0) }).then(() => {
    if (!timers.has(id)) return;
    try { fn(...args); } catch (e) { consoleObject.error(e); }
    tick();
  }, () => timers.delete(id));
  tick();
  return id;
}

function deepFreeze(v) {
  if (v && typeof v === 'object' && !Object.isFrozen(v)) { Object.freeze(v); for (const k of Object.keys(v)) deepFreeze(v[k]); }
  return v;
}

const files = Object.freeze({
  read: (path) => host('files.read', { path: String(path) }),
  write: (path, data) => {
    const bytes = bytesOf(data);
    return host('files.write', { path: String(path), data: bytes ? new Uint8Array(bytes) : typeof data === 'string' ? data : JSON.stringify(data) });
  },
  list: (path = '') => host('files.list', { path: String(path) }),
  delete: (path) => host('files.delete', { path: String(path) }),
});
const acme = Object.freeze({
  order: (domains) => host('acme.order', { domains: Array.isArray(domains) ? domains.map(String) : [String(domains)] }),
});

function isResponseLike(v) {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return false;
  if (typeof v.status !== 'number') return false; // an out-of-range status is refused by the daemon, not sent as JSON
  const keys = Object.keys(v);
  return keys.every((k) => k === 'status' || k === 'statusText' || k === 'headers' || k === 'body') && ('headers' in v || 'body' in v);
}
function encode(v) {
  if (v instanceof Response) return { kind: 'response', status: v.status, headers: v.headers.toJSON(), body: bodies.get(v) };
  if (v === undefined) return { kind: 'empty' };
  if (isResponseLike(v)) {
    const headers = new Headers(v.headers).toJSON();
    let body = v.body == null ? null : v.body;
    if (body !== null && typeof body !== 'string') {
      const bytes = bytesOf(body);
      if (bytes) body = new Uint8Array(bytes);
      else { body = JSON.stringify(body); if (!('content-type' in headers)) headers['content-type'] = 'application/json; charset=utf-8'; }
    }
    return { kind: 'response', status: v.status, headers, body };
  }
  const bytes = bytesOf(v);
  if (bytes) return { kind: 'bytes', body: new Uint8Array(bytes) };
  const json = JSON.stringify(v);
  return json === undefined ? { kind: 'empty' } : { kind: 'json', body: json };
}
function message(e) {
  if (e instanceof Error) return e.message || e.name;
  try { return typeof e === 'string' ? e : JSON.stringify(e) ?? String(e); } catch { return String(e); }
}

function start(main) {
  return (async () => {
    let value;
    try { value = await main.call(g); }
    catch (e) { return { kind: 'error', message: message(e), stack: e instanceof Error && e.stack ? String(e.stack) : '' }; }
    try { return encode(value); }
    catch (e) { return { kind: 'error', message: 'the returned value cannot be sent: ' + message(e), stack: '' }; }
  })();
}

// Ways to run code outside a request's wall time, or to crash the worker, go: FinalizationRegistry callbacks
// run after the run ended; Atomics.waitAsync with a timeout aborts the process in isolated-vm 5.
delete g.FinalizationRegistry;
delete Atomics.waitAsync;

const define = (name, value, writable = true) =>
  Object.defineProperty(g, name, { value, writable, configurable: writable, enumerable: false });
define('fetch', fetch);
define('Response', Response);
define('Headers', Headers);
define('TextEncoder', TextEncoder);
define('TextDecoder', TextDecoder);
define('console', Object.freeze(consoleObject));
define('files', files);
define('acme', acme);
define('setTimeout', setTimeout);
define('clearTimeout', clearTimeout);
define('setInterval', setInterval);
define('clearInterval', clearTimeout);
define('queueMicrotask', (fn) => { Promise.resolve().then(fn).catch((e) => consoleObject.error(e)); });
define('__hoody_start', start, false);
return function control(op, a, b, c) {
  if (op === 0) return settle(a, b, c);
  consoleCap = Number(b);
  define('request', deepFreeze(a));
};
})()`;
