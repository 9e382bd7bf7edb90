import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type Docker from 'dockerode';

/** The seccomp section of an OCI runtime spec; the engine's profile format reads the same keys. */
export interface SeccompProfile {
  defaultAction: string;
  defaultErrnoRet?: number;
  architectures?: string[];
  flags?: string[];
  syscalls?: SeccompRule[];
}

export interface SeccompRule {
  names: string[];
  action: string;
  errnoRet?: number;
  args?: { index: number; value: number; valueTwo?: number; op: string }[];
}

/**
 * _IOW(0x94, nr, 4096): every BTRFS ioctl taking btrfs_ioctl_vol_args(_v2). Among them SUBVOL_CREATE(_V2) and
 * SNAP_CREATE(_V2), which need no capability and make a subvolume outside the container's qgroup; the rest
 * (device add/remove, resize, balance, subvolume destroy) need CAP_SYS_ADMIN anyway.
 */
export const BTRFS_VOL_ARGS_IOCTLS = 0x50009400;
const FAMILY_MASK = 0xffffff00;

/**
 * The engine's profile with ioctl allowed for every request except the BTRFS vol-args family. Seccomp can
 * only allow on a match, so "cmd & mask != family" becomes one masked test per bit, OR'ed (runc adds
 * same-argument conditions as separate rules). Only the low 32 bits are compared: the kernel truncates
 * the cmd to an unsigned int, so upper bits must not let a request past.
 */
export function withoutSubvolumeIoctls(profile: SeccompProfile): SeccompProfile {
  const syscalls: SeccompRule[] = [];
  for (const rule of profile.syscalls ?? []) {
    const unconditional = rule.action === 'SCMP_ACT_ALLOW' && !(rule.args ?? []).length;
    if (!unconditional || !rule.names.includes('ioctl')) {
      syscalls.push(rule);
      continue;
    }
    const names = rule.names.filter((n) => n !== 'ioctl');
    if (names.length) syscalls.push({ ...rule, names });
  }
  const args: NonNullable<SeccompRule['args']> = [];
  for (let bit = 1; bit <= 0x80000000; bit *= 2) {
    if (!(FAMILY_MASK & bit)) continue;
    const want = BTRFS_VOL_ARGS_IOCTLS & bit ? 0 : bit; // allowed when this bit differs from the family's
    args.push({ index: 1, value: bit >>> 0, valueTwo: want >>> 0, op: 'SCMP_CMP_MASKED_EQ' });
  }
  syscalls.push({ names: ['ioctl'], action: 'SCMP_ACT_ALLOW', args });
  return { ...profile, syscalls };
}

/** Where a running container's OCI spec lives: dockerd's own containerd, or a system containerd. */
const BUNDLE_ROOTS = ['/var/run/docker/containerd/daemon', '/run/docker/containerd/daemon', '/run/containerd'];

/** The bundle's config.json through the container's shim: the shim's working directory is the bundle, wherever the engine's exec root is. */
async function shimBundleSpec(pid: number): Promise<string | null> {
  if (!pid) return null;
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  return ppid > 1 ? readFile(`/proc/${ppid}/cwd/config.json`, 'utf8').catch(() => null) : null;
}

async function readBundleSeccomp(id: string, pid: number): Promise<SeccompProfile | null> {
  for (const path of [null, ...BUNDLE_ROOTS]) {
    const text = path === null ? await shimBundleSpec(pid) : await readFile(`${path}/io.containerd.runtime.v2.task/moby/${id}/config.json`, 'utf8').catch(() => null);
    if (text === null) continue;
    const spec = JSON.parse(text) as { linux?: { seccomp?: SeccompProfile } };
    if (spec.linux?.seccomp) return spec.linux.seccomp;
  }
  return null;
}

/**
 * The engine's default profile as it resolves it for these capabilities (not a copy that ages with the
 * engine): read from the runtime spec of a short-lived probe container.
 */
export async function engineDefaultProfile(docker: Docker, images: string[], capAdd: string[]): Promise<SeccompProfile> {
  const errors: string[] = [];
  for (const image of images) {
    const c = await docker
      .createContainer({
        name: `hoody-seccomp-probe-${randomBytes(4).toString('hex')}`,
        Image: image,
        Entrypoint: ['sleep', '60'],
        Cmd: [],
        Labels: { 'io.hoody.probe': 'seccomp' },
        HostConfig: { AutoRemove: true, NetworkMode: 'none', SecurityOpt: ['no-new-privileges'], CapDrop: ['ALL'], CapAdd: capAdd },
      })
      .catch((err: Error) => {
        errors.push(`${image}: ${err.message}`);
        return null;
      });
    if (!c) continue;
    try {
      await c.start();
      const pid = Number((await c.inspect()).State?.Pid ?? 0);
      const profile = await readBundleSeccomp(c.id, pid);
      if (profile) return profile;
      errors.push(`${image}: no runtime spec beside its shim nor under ${BUNDLE_ROOTS.join(', ')}`);
    } catch (err) {
      errors.push(`${image}: ${(err as Error).message}`);
    } finally {
      await c.remove({ force: true }).catch(() => undefined);
    }
  }
  throw new Error(`cannot read the engine's default seccomp profile (${errors.join('; ')})`);
}
