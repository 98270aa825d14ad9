/**
 * The development API key and secret of the embedded mode: generated on first start and kept
 * in the git-ignored data folder, so restarts keep tokens valid and nothing secret is committed.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';

export interface DevKeys {
  key: string;
  secret: string;
}

export const DEV_KEYS_FILE = 'dev-keys.yaml';

export function loadOrCreateDevKeys(dataDir: string): { keys: DevKeys; created: boolean; path: string } {
  const path = join(dataDir, DEV_KEYS_FILE);
  if (existsSync(path)) {
    const parsed = parse(readFileSync(path, 'utf8')) as Partial<DevKeys> | null;
    if (typeof parsed?.key === 'string' && typeof parsed.secret === 'string' && parsed.secret.length >= 32) {
      return { keys: { key: parsed.key, secret: parsed.secret }, created: false, path };
    }
    throw new Error(`${path} is damaged (needs key and a secret of 32+ characters); delete it to make a new one`);
  }
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const keys: DevKeys = {
    key: `APIdev${randomBytes(6).toString('hex')}`,
    secret: randomBytes(32).toString('base64url'),
  };
  writeFileSync(path, stringify(keys), { mode: 0o600 });
  return { keys, created: true, path };
}
