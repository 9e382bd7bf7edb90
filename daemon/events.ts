import type { ContainerContext } from '../containers/context.js';
import { LABEL_INSTANCE, LABEL_NAME } from '../containers/context.js';

/**
 * Engine start events drive the namespaces' started() hooks (network redirects, @reboot cron), so a
 * restart by hoody, by Docker's restart policy or by an operator's `docker restart` is handled alike.
 */
export function watchStarts(ctx: ContainerContext): () => void {
  return ctx.engine.events(
    { [LABEL_INSTANCE]: ctx.instance },
    (e) => {
      if (e.action !== 'start') return;
      const name = e.labels[LABEL_NAME];
      const row = name ? ctx.store.get(name) : undefined;
      if (row?.phase !== 'ready') return;
      for (const hook of ctx.hooks) {
        hook.started?.({ ...row, engineId: row.engineId ?? e.id }).catch((err: unknown) =>
          ctx.log.error({ err, container: row.name }, 'start hook failed'),
        );
      }
    },
    (err) => ctx.log.warn({ err: err.message }, 'engine events interrupted; reconnecting'),
  );
}
