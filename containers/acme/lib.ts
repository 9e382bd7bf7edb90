import type * as AcmeClient from 'acme-client';

let loading: Promise<typeof AcmeClient> | undefined;
let loaded: typeof AcmeClient | undefined;

/**
 * acme-client (with its axios) is the heaviest import of hoodyd (~25% of its start-up CPU): it is loaded on the
 * first order instead of at start, so a restarted daemon answers again sooner.
 */
export async function loadAcme(): Promise<typeof AcmeClient> {
  loading ??= import('acme-client');
  loaded ??= await loading;
  return loaded;
}

/** The library, once loadAcme() has resolved (every order awaits it first). */
export function acmeLib(): typeof AcmeClient {
  if (!loaded) throw new Error('acme-client used before loadAcme()');
  return loaded;
}
