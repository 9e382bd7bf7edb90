import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { BUSYBOX_IMAGE, buildBusyboxImage, buildNodeImage, NODE_IMAGE } from '../host/images.js';

/** One container workload the density benchmark provisions many of. */
export interface Workload {
  name: string;
  image: string;
  /** The container port its proxy route points at. */
  port: number;
  description: string;
  /** Builds the image when the engine does not have it. */
  ensureImage(docker: Docker): Promise<void>;
}

async function imageExists(docker: Docker, ref: string): Promise<boolean> {
  return docker
    .getImage(ref)
    .inspect()
    .then(
      () => true,
      () => false,
    );
}

/** An image that differs from `base` only in its command: its layers (and their page cache) are shared. */
async function deriveImage(docker: Docker, base: string, ref: string, cmd: readonly string[]): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'hoody-bench-image-'));
  try {
    await writeFile(join(dir, 'Dockerfile'), `FROM ${base}\nCMD ${JSON.stringify(cmd)}\n`);
    const stream = await docker.buildImage({ context: dir, src: ['Dockerfile'] }, { t: ref, rm: true });
    await new Promise<void>((resolve, reject) => {
      docker.modem.followProgress(stream, (err: Error | null, out: { error?: string }[]) => {
        const failed = err ?? out.find((o) => o.error);
        if (failed) reject(err ?? new Error((failed as { error: string }).error));
        else resolve();
      });
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const nodeVariant = (name: string, flags: readonly string[], description: string): Workload => ({
  name,
  image: `hoody/${name}`,
  port: 8080,
  description: `${description}: node ${flags.join(' ')} /srv/server.js`,
  async ensureImage(docker) {
    if (!(await imageExists(docker, NODE_IMAGE))) await buildNodeImage(docker);
    if (!(await imageExists(docker, this.image))) await deriveImage(docker, NODE_IMAGE, this.image, ['/usr/bin/node', ...flags, '/srv/server.js']);
  },
});

export const WORKLOADS: Readonly<Record<string, Workload>> = {
  busybox: {
    name: 'busybox',
    image: BUSYBOX_IMAGE,
    port: 80,
    description: 'static busybox, idle init (sh + sleep)',
    async ensureImage(docker) {
      if (!(await imageExists(docker, BUSYBOX_IMAGE))) await buildBusyboxImage(docker);
    },
  },
  node: {
    name: 'node',
    image: NODE_IMAGE,
    port: 8080,
    description: "the host's node binary + its shared libraries, a tiny HTTP server on :8080",
    async ensureImage(docker) {
      if (!(await imageExists(docker, NODE_IMAGE))) await buildNodeImage(docker);
    },
  },
  // Lever: fewer V8 worker threads and a smaller young generation (no security cost).
  'node-lean': nodeVariant('node-lean', ['--v8-pool-size=1', '--max-semi-space-size=1'], 'lean V8 flags'),
  // Lever (opt-in, a security trade-off): a fixed V8 seed places the JS heap at the same addresses in every
  // container, so the deserialized startup snapshot is byte-identical and KSM can merge it. The cost: every
  // container of the image has the same Math.random() sequence and a predictable JS heap layout.
  'node-seeded': nodeVariant('node-seeded', ['--v8-pool-size=1', '--max-semi-space-size=1', '--random-seed=1'], 'lean flags + fixed V8 seed'),
  // The opt-in merge-friendly profile (bench/pages.ts): the seed's cost, plus builtins called from the binary (which
  // sits at one address in every container) instead of a copy in the randomly placed code range: no security cost.
  'node-merge': nodeVariant('node-merge', ['--v8-pool-size=1', '--max-semi-space-size=1', '--random-seed=1', '--no-short-builtin-calls'], 'the merge-friendly profile: lean flags + fixed V8 seed + builtins called in place'),
};

export function workload(name: string): Workload {
  const w = WORKLOADS[name];
  if (!w) throw Object.assign(new Error(`unknown workload ${name} (have: ${Object.keys(WORKLOADS).join(', ')})`), { usage: true });
  return w;
}
