/**
 * What the image carries: the Dockerfile copies common/, sfu/, bridge/, embedded/ and config/
 * (minus *.test.ts, see .dockerignore). Test doubles must live under test/, and no production
 * module may import anything from test/, or the image would ship (or miss) test code.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));
const SHIPPED = ['common', 'sfu', 'bridge', 'embedded', 'config'];

function shippedSources(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) out.push(relative(root, path));
    }
  };
  for (const d of SHIPPED) walk(join(root, d));
  return out;
}

describe('what ships in the image', () => {
  it('holds no test doubles: the Twirp contract backend and the webhook test receiver live under test/', () => {
    const files = shippedSources();
    expect(files.length).toBeGreaterThan(20);
    expect(files.filter((f) => /contract-backend|test-receiver|fake|mock|stub/i.test(f))).toEqual([]);
  });

  it('has no production module importing from test/', () => {
    const offenders = shippedSources().filter((f) => /from\s+'(\.\.\/)+test\//.test(readFileSync(join(root, f), 'utf8')));
    expect(offenders).toEqual([]);
  });

  it('copies only the production folders into the image and leaves test/ and *.test.ts out', () => {
    const dockerignore = readFileSync(join(root, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
    expect(dockerignore).toContain('*');
    expect(dockerignore).toContain('**/*.test.ts');
    expect(dockerignore.filter((l) => l.startsWith('!test'))).toEqual([]);
    const copies = readFileSync(join(root, 'Dockerfile'), 'utf8').split('\n').filter((l) => /^COPY (?!--)/.test(l));
    expect(copies.filter((l) => /\btest\b/.test(l))).toEqual([]);
  });
});
