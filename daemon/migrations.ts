import { acmeMigrations } from '../containers/acme/schema.js';
import { cronMigrations } from '../containers/cron/schema.js';
import { execMigrations } from '../containers/exec/schema.js';
import { proxyMigrations } from '../containers/proxy/schema.js';
import type { MigrationSet } from '../containers/schema.js';

/** Every namespace's migration set, applied after the containers set at daemon start. */
export const NAMESPACE_MIGRATIONS: readonly MigrationSet[] = [cronMigrations, proxyMigrations, acmeMigrations, execMigrations];
