// Loaded into hoodyd (NODE_OPTIONS=--import) by the supervisor test: once `<state dir>/crash.now` appears, it
// throws an uncaught exception, so the crash guard and the supervisor meet a real one.
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const trigger = join(process.env.HOODY_STATE_DIR ?? '/nonexistent', 'crash.now');
if (process.argv[1]?.endsWith('hoodyd.js')) {
  setInterval(() => {
    if (!existsSync(trigger)) return;
    rmSync(trigger, { force: true });
    throw new Error('crash on demand (test)');
  }, 100).unref();
}
