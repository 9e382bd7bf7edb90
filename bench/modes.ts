import { DEFAULT_SHIM_GROUP_SIZE } from '../daemon/config.js';
import type { KsmProfile } from './ksm.js';

/** One way of running the containers: the plain engine or hoody, and how KSM is set while it runs. */
export interface Mode {
  name: string;
  /** Key in the JSON figures (docker -> docker_baseline). */
  key: string;
  engine: 'docker' | 'hoody';
  ksm: KsmProfile;
  /** The hoodyd's environment on top of the bench's (hoody modes). */
  env?: Record<string, string>;
  description: string;
  /** Every container runs the seed's pipeline once a minute (cron -> wget in the container -> exec -> files + bundle PATCH). */
  active?: boolean;
  /** The idle mode an active one is compared with (its name). */
  base?: string;
}

// Every hoody mode says its shim grouping, so a change of hoody's default does not change what a mode measures.
const ONE_SHIM_EACH = { HOODY_SHIM_GROUP_SIZE: '1' };
const GROUPED = { HOODY_SHIM_GROUP_SIZE: String(DEFAULT_SHIM_GROUP_SIZE) };

const FAST = { advisor_mode: 'none', pages_to_scan: 5000, sleep_millisecs: 20, use_zero_pages: 1 } as const;
const SLOW = { advisor_mode: 'none', pages_to_scan: 100, sleep_millisecs: 20, use_zero_pages: 1 } as const;

export const MODES: Readonly<Record<string, Mode>> = {
  docker: {
    name: 'docker',
    key: 'docker_baseline',
    engine: 'docker',
    ksm: { kind: 'off' },
    description: 'plain `docker run -d` of the same image through dockerode, KSM off',
  },
  'docker-ksm-on': {
    name: 'docker-ksm-on',
    key: 'docker_ksm_on',
    engine: 'docker',
    ksm: { kind: 'hoody-default' },
    description: "plain `docker run -d`, KSM on with hoody's default knobs",
  },
  'hoody-ksm-off': {
    name: 'hoody-ksm-off',
    key: 'hoody_ksm_off',
    engine: 'hoody',
    ksm: { kind: 'off' },
    env: ONE_SHIM_EACH,
    description: 'through hoodyd, namespaces populated, one shim per container, KSM unmerged (run=2) then off (run=0)',
  },
  'hoody-ksm-on': {
    name: 'hoody-ksm-on',
    key: 'hoody_ksm_on',
    engine: 'hoody',
    ksm: { kind: 'hoody-default' },
    env: ONE_SHIM_EACH,
    description: "through hoodyd, one shim per container, KSM with hoody's default (scan-time advisor capped at 10% CPU, sleep 50 ms, zero pages)",
  },
  'hoody-grouped': {
    name: 'hoody-grouped',
    key: 'hoody_grouped',
    engine: 'hoody',
    ksm: { kind: 'hoody-default' },
    env: GROUPED,
    description: `through hoodyd, containers share containerd shims in groups of ${DEFAULT_SHIM_GROUP_SIZE} (hoody's default), KSM with hoody's default`,
  },
  'hoody-grouped-ksm-off': {
    name: 'hoody-grouped-ksm-off',
    key: 'hoody_grouped_ksm_off',
    engine: 'hoody',
    ksm: { kind: 'off' },
    env: GROUPED,
    description: `through hoodyd, shims shared in groups of ${DEFAULT_SHIM_GROUP_SIZE}, KSM off`,
  },
  'hoody-ksm-fast': {
    name: 'hoody-ksm-fast',
    key: 'hoody_ksm_fast',
    engine: 'hoody',
    ksm: { kind: 'knobs', knobs: FAST },
    env: ONE_SHIM_EACH,
    description: 'KSM lever: no advisor, pages_to_scan 5000, sleep 20 ms',
  },
  'hoody-ksm-slow': {
    name: 'hoody-ksm-slow',
    key: 'hoody_ksm_slow',
    engine: 'hoody',
    ksm: { kind: 'knobs', knobs: SLOW },
    env: ONE_SHIM_EACH,
    description: 'KSM lever: no advisor, pages_to_scan 100 (kernel default), sleep 20 ms',
  },
  'hoody-ksm-capped': {
    name: 'hoody-ksm-capped',
    key: 'hoody_ksm_capped',
    engine: 'hoody',
    ksm: { kind: 'knobs', knobs: { advisor_mode: 'scan-time', advisor_max_cpu: 10, advisor_max_pages_to_scan: 1000, sleep_millisecs: 50, use_zero_pages: 1 } },
    env: ONE_SHIM_EACH,
    description: 'KSM lever: the scan-time advisor with pages_to_scan capped at 1000 per 50 ms wake-up (≤ 20k pages/s)',
  },
  'hoody-ksm-nozero': {
    name: 'hoody-ksm-nozero',
    key: 'hoody_ksm_nozero',
    engine: 'hoody',
    ksm: { kind: 'knobs', knobs: { advisor_mode: 'scan-time', advisor_max_cpu: 10, sleep_millisecs: 50, use_zero_pages: 0 } },
    env: ONE_SHIM_EACH,
    description: "KSM lever: hoody's default but use_zero_pages 0",
  },
};

/** `<hoody mode>-active`: the same mode with every container active (see Mode.active). */
export const ACTIVE_SUFFIX = '-active';

/** The mode of a name, its `-active` variant included; undefined when unknown. */
export function findMode(name: string): Mode | undefined {
  if (MODES[name]) return MODES[name];
  if (!name.endsWith(ACTIVE_SUFFIX)) return undefined;
  const base = MODES[name.slice(0, -ACTIVE_SUFFIX.length)];
  if (base?.engine !== 'hoody') return undefined;
  return {
    ...base,
    name,
    key: `${base.key}_active`,
    active: true,
    base: base.name,
    description: `${base.description}; every container active: a cron entry each minute wgets its own exec script, which writes a file and PATCHes its TLS bundle`,
  };
}

export function mode(name: string): Mode {
  const m = findMode(name);
  if (!m) throw Object.assign(new Error(`unknown mode ${name} (have: ${Object.keys(MODES).join(', ')}, and <hoody mode>${ACTIVE_SUFFIX})`), { usage: true });
  return m;
}
