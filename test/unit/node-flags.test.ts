/**
 * The SFU's Node flags (sfu/node-flags.ts) are written where its processes start, since V8 reads
 * them before the process runs: package.json's `start` and `sfu` scripts and the Dockerfile's
 * `sfu` and `embedded` roles must carry exactly that list, so the one decision stays one.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SFU_NODE_FLAGS } from '../../sfu/node-flags.ts';

const root = join(import.meta.dirname, '..', '..');

/** The flags between `node` and the entry point of a command line. */
function flagsBefore(command: string, entry: string): string[] {
  const m = new RegExp(`\\bnode((?: --?[\\w=.-]+)*) (?:/app/)?${entry.replace('.', '\\.')}\\b`).exec(command);
  if (!m) throw new Error(`no "node ... ${entry}" in: ${command}`);
  return m[1]!.trim().split(/\s+/).filter(Boolean);
}

describe('the SFU processes start with its Node flags', () => {
  it('package.json: npm start and npm run sfu', () => {
    const scripts = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
    expect(flagsBefore(scripts.start!, 'embedded/main.ts')).toEqual([...SFU_NODE_FLAGS]);
    expect(flagsBefore(scripts.sfu!, 'sfu/main.ts')).toEqual([...SFU_NODE_FLAGS]);
  });

  it("the Dockerfile's sfu and embedded roles", () => {
    const dockerfile = readFileSync(join(root, 'Dockerfile'), 'utf8');
    const role = (name: string) => dockerfile.split('\n').find((l) => l.trimStart().startsWith(`${name})`)) ?? '';
    expect(flagsBefore(role('sfu'), 'sfu/main.ts')).toEqual([...SFU_NODE_FLAGS]);
    expect(flagsBefore(role('embedded'), 'embedded/main.ts')).toEqual([...SFU_NODE_FLAGS]);
  });
});
