import { fail } from './errors.js';

// DNS-label rules: a container name is part of its service hostnames (cron.<name>.<domain>).
const NAME_RE = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const SNAPSHOT_RE = /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$/;
const USER_RE = /^[a-z_][a-z0-9_-]{0,31}$/;

export function checkName(name: string): string {
  if (!NAME_RE.test(name)) throw fail('NAME_INVALID', name);
  return name;
}

export function checkSnapshotName(name: string): string {
  if (!SNAPSHOT_RE.test(name) || name.includes('..')) throw fail('SNAPSHOT_NAME_INVALID', name);
  return name;
}

export function checkUser(user: string): string {
  if (!USER_RE.test(user)) throw fail('USER_INVALID', user);
  return user;
}
