/**
 * Shared containerd shims (issue 14.1). containerd's runc v2 shim serves every container whose OCI spec carries
 * the annotation `io.containerd.runc.v2.group=<g>` from one process, but Docker 20.10 cannot set annotations. A
 * dockerd hoody starts passes its PATH and working directory to its containerd, which resolves
 * `containerd-shim-runc-v2` through them; the wrapper written here sits first, copies a container's
 * `HOODY_SHIM_GROUP` env value into that annotation of the bundle's config.json on `start`, and runs the real shim.
 */
import { access, mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';

export const SHIM_BINARY = 'containerd-shim-runc-v2';
export const SHIM_GROUP_ENV = 'HOODY_SHIM_GROUP';
export const SHIM_GROUP_ANNOTATION = 'io.containerd.runc.v2.group';
/** What a group name may be: it goes through sh and jq, and names a socket. */
export const SHIM_GROUP_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

async function executable(path: string): Promise<boolean> {
  return access(path, 1).then(
    () => true,
    () => false,
  );
}

/** The first `name` on PATH outside `skip` (the real shim, not hoody's wrapper). */
async function onPath(name: string, skip: string, path = process.env.PATH ?? ''): Promise<string | null> {
  for (const dir of path.split(delimiter)) {
    if (!dir || dir === skip) continue;
    if (await executable(join(dir, name))) return join(dir, name);
  }
  return null;
}

/** The wrapper's text. It prints nothing of its own: containerd reads the shim's address from stdout. */
export function wrapperScript(realShim: string, jq: string): string {
  const name = SHIM_GROUP_NAME.source.replace(/\\/g, '\\\\');
  return `#!/bin/sh
# Written by hoody (host/shim-groups.ts). On "start", a container whose env has ${SHIM_GROUP_ENV}=<g> gets the
# annotation ${SHIM_GROUP_ANNOTATION}=<g> in its bundle's config.json (the working directory), so the real shim
# serves it from group g's shared process. Anything unexpected leaves config.json as it was: one shim, as before.
last=
for a in "$@"; do last=$a; done
# grep first: a container without a group (and every plain \`docker run\`) costs no jq start (~25 ms of CPU).
if [ "$last" = start ] && [ -f config.json ] && grep -q '"${SHIM_GROUP_ENV}=' config.json; then
  if ${jq} -c '([.process.env[]? | select(startswith("${SHIM_GROUP_ENV}=")) | ltrimstr("${SHIM_GROUP_ENV}=")][0] // "") as $g
      | if ($g | test("${name}")) then .annotations["${SHIM_GROUP_ANNOTATION}"] = $g else empty end' config.json > config.json.hoody 2>/dev/null &&
     [ -s config.json.hoody ]; then
    mv -f config.json.hoody config.json
  else
    rm -f config.json.hoody
  fi
fi
exec ${realShim} "$@"
`;
}

export interface ShimWrapper {
  /** The directory to put first on dockerd's PATH and to start it in. */
  dir: string;
  realShim: string;
}

/**
 * Writes the wrapper into `dir` (atomically; idempotent). Null when this box has no runc v2 shim or no jq: then
 * containers keep one shim each, as without hoody.
 */
export async function installShimWrapper(dir: string): Promise<ShimWrapper | null> {
  const realShim = await onPath(SHIM_BINARY, dir);
  const jq = await onPath('jq', dir);
  if (!realShim || !jq) return null;
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const target = join(dir, SHIM_BINARY);
  const text = wrapperScript(realShim, jq);
  const current = await readFile(target, 'utf8').catch(() => '');
  if (current !== text) {
    await writeFile(`${target}.tmp`, text, { mode: 0o755 });
    await rename(`${target}.tmp`, target);
  }
  return { dir, realShim };
}

/** dockerd's environment with the wrapper's directory first on PATH (its containerd inherits it). */
export function engineEnv(wrapper: ShimWrapper | null, env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  if (!wrapper) return env;
  return { ...env, PATH: [wrapper.dir, env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'].join(delimiter) };
}

async function processes(): Promise<{ pid: number; ppid: number; args: string }[]> {
  const out: { pid: number; ppid: number; args: string }[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const args = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).split('\0').join(' ').trim();
      out.push({ pid: Number(entry), ppid, args });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/**
 * Whether the containerd behind the dockerd serving `socketPath` has a hoody wrapper first on its PATH
 * (containerd resolves the shim once and caches it, so an engine started before the wrapper cannot group).
 */
export async function engineGroupsShims(socketPath: string): Promise<boolean> {
  const procs = await processes();
  const dockerd = procs.find((p) => /(^|\/)dockerd(\s|$)/.test(p.args) && p.args.includes(`unix://${socketPath}`));
  if (!dockerd) return false;
  const containerd = procs.find((p) => p.ppid === dockerd.pid && /(^|\/)containerd(\s|$)/.test(p.args));
  if (!containerd) return false;
  const environ = await readFile(`/proc/${containerd.pid}/environ`, 'utf8').catch(() => '');
  const first = (environ.split('\0').find((v) => v.startsWith('PATH='))?.slice(5) ?? '').split(delimiter)[0];
  if (!first) return false;
  const text = await readFile(join(first, SHIM_BINARY), 'utf8').catch(() => '');
  return text.includes(`annotation ${SHIM_GROUP_ANNOTATION}=`);
}

/** The runc v2 shim processes running now (a grouped shim serves many containers). */
export async function runningShims(): Promise<{ pid: number; args: string }[]> {
  return (await processes()).filter((p) => p.args.startsWith(`${SHIM_BINARY} `) || p.args.includes(`/${SHIM_BINARY} `));
}
