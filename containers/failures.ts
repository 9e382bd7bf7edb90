import { CommandError } from '../host/command.js';
import { fail, type HoodyError, isHoodyError } from './errors.js';

function statusOf(err: unknown): number | undefined {
  return (err as { statusCode?: number }).statusCode;
}

function messageOf(err: unknown): string {
  const json = (err as { json?: { message?: string } }).json;
  return json?.message ?? (err as Error).message ?? String(err);
}

/** Turns an engine (dockerode) failure into a catalogued error. */
export function engineFailure(err: unknown, image?: string): HoodyError {
  if (isHoodyError(err)) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ECONNREFUSED' || code === 'ENOENT' || code === 'EACCES') return fail('ENGINE_UNAVAILABLE', messageOf(err));
  const msg = messageOf(err);
  if (statusOf(err) === 404 && image && /image/i.test(msg)) return fail('IMAGE_UNKNOWN', image);
  if (statusOf(err) === 400 && image && /invalid reference format/i.test(msg)) return fail('IMAGE_INVALID', image);
  if (/no space left/i.test(msg)) return fail('POOL_FULL', msg);
  return fail('ENGINE_FAILED', msg);
}

/** Turns a storage failure into a catalogued error; the command and stderr stay in the message. */
export function storageFailure(err: unknown): HoodyError {
  if (isHoodyError(err)) return err;
  const text = err instanceof CommandError ? `${err.message}` : messageOf(err);
  if (/quota exceeded|EDQUOT/i.test(text)) return fail('DISK_QUOTA_EXCEEDED', text);
  if (/no space left|ENOSPC/i.test(text)) return fail('POOL_FULL', text);
  return fail('STORAGE_FAILED', text);
}
