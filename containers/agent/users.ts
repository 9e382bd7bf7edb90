import type { CommandTarget, ContainerCommands } from './commands.js';

// Creates the user on first use: shadow's useradd, else busybox adduser, else (images with neither, like
// hoody/busybox) a passwd/group line and a home. The name is passed as $1, never spliced into the script.
const ENSURE_USER = `u="$1"
id -u "$u" >/dev/null 2>&1 && exit 0
command -v useradd >/dev/null 2>&1 && useradd -m -s /bin/sh "$u" && exit 0
command -v adduser >/dev/null 2>&1 && adduser -D -s /bin/sh "$u" 2>/dev/null && exit 0
n=1000
while grep -q "^[^:]*:[^:]*:$n:" /etc/passwd /etc/group 2>/dev/null; do n=$((n + 1)); done
echo "$u:x:$n:$n::/home/$u:/bin/sh" >> /etc/passwd && echo "$u:x:$n:" >> /etc/group &&
  mkdir -p "/home/$u" && chown "$n:$n" "/home/$u"`;

/** The users commands run as (cron entries' and exec callers'), made in their container on first use. */
export class ContainerUsers {
  /** engineId + user pairs known to exist, so a user is created at most once per container incarnation. */
  readonly #known = new Set<string>();

  constructor(private readonly commands: ContainerCommands) {}

  /** null when the user exists (or was made), else why not. root always exists. */
  async ensure(target: CommandTarget, user: string): Promise<string | null> {
    if (user === 'root') return null;
    const key = `${target.engineId}\n${user}`;
    if (this.#known.has(key)) return null;
    const r = await this.commands.exec(target, { cmd: ['sh', '-c', ENSURE_USER, 'sh', user], user: 'root', timeoutMs: 30_000, maxOutputBytes: 4096 });
    if (r.exitCode !== 0) return `user ${user} does not exist in the container and could not be created (exit ${r.exitCode}): ${r.output.trim()}`;
    this.#known.add(key);
    return null;
  }

  forget(engineId: string): void {
    for (const k of this.#known) if (k.startsWith(`${engineId}\n`)) this.#known.delete(k);
  }
}
