import type { MigrationSet } from '../schema.js';

/**
 * ACME accounts: one per container and directory (production and staging are different CAs), made on first use
 * and kept, so repeated orders reuse it. `account_url` is null until the CA registered the key. The account key
 * is a PEM private key (the state database is the daemon's, not the container's). Rows go with their container.
 */
export const acmeMigrations: MigrationSet = {
  name: 'acme',
  steps: [
    `CREATE TABLE acme_accounts (
       container TEXT NOT NULL REFERENCES containers(name) ON DELETE CASCADE,
       directory_url TEXT NOT NULL,
       account_key TEXT NOT NULL,
       account_url TEXT,
       created_at TEXT NOT NULL,
       updated_at TEXT NOT NULL,
       PRIMARY KEY (container, directory_url)
     ) STRICT;`,
  ],
};
