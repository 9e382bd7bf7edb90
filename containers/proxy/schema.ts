import type { MigrationSet } from '../schema.js';

export const proxyMigrations: MigrationSet = {
  name: 'proxy',
  steps: [
    `CREATE TABLE proxy_routes (
       hostname TEXT PRIMARY KEY,
       container TEXT NOT NULL REFERENCES containers(name) ON DELETE CASCADE,
       port INTEGER NOT NULL,
       https_redirect INTEGER NOT NULL DEFAULT 0,
       created_at TEXT NOT NULL
     ) STRICT;
     CREATE INDEX proxy_routes_container ON proxy_routes(container);
     CREATE TABLE proxy_certs (
       domain TEXT PRIMARY KEY,
       container TEXT NOT NULL REFERENCES containers(name) ON DELETE CASCADE,
       cert TEXT NOT NULL,
       key TEXT NOT NULL,
       chain TEXT NOT NULL,
       fingerprint TEXT NOT NULL,
       not_after TEXT NOT NULL,
       updated_at TEXT NOT NULL
     ) STRICT;
     CREATE INDEX proxy_certs_container ON proxy_certs(container);`,
  ],
};
