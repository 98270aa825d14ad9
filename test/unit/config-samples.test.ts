/**
 * The committed sample configs (`config/sfu.yaml`, `config/bridge.yaml`) are exactly what
 * `npm run config:generate` produces from the code's defaults, and each reads back through the
 * process's own config loader to those defaults. A schema change without regenerating fails here.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { CONFIG_DIR, generateSamples, renderSample } from '../../config/generate.ts';
import { defaultSfuConfig, parseSfuConfig } from '../../sfu/config.ts';
import { bridgeFileSchema, defaultBridgeFileConfig } from '../../bridge/config.ts';

const SECRET = 's'.repeat(32);

describe('sample configs', () => {
  it.each(generateSamples().map((s) => [s.file, s.text]))(
    'config/%s equals the generated sample (run `npm run config:generate` after changing defaults)',
    (file, text) => {
      expect(readFileSync(join(CONFIG_DIR, file), 'utf8')).toBe(text);
    },
  );

  it('config/sfu.yaml plus one API key loads as exactly the SFU defaults', () => {
    const raw = parse(readFileSync(join(CONFIG_DIR, 'sfu.yaml'), 'utf8')) as Record<string, unknown>;
    const cfg = parseSfuConfig({ ...raw, keys: { APIsample: SECRET } }, 'config/sfu.yaml');
    expect(cfg).toEqual({ ...defaultSfuConfig(), keys: { APIsample: SECRET } });
  });

  it('config/sfu.yaml alone is refused until an API key is added, saying so', () => {
    const raw = parse(readFileSync(join(CONFIG_DIR, 'sfu.yaml'), 'utf8')) as unknown;
    expect(() => parseSfuConfig(raw, 'config/sfu.yaml')).toThrow(/keys: at least one API key is required/);
  });

  it('config/bridge.yaml loads as exactly the bridge file defaults', () => {
    const raw = parse(readFileSync(join(CONFIG_DIR, 'bridge.yaml'), 'utf8')) as unknown;
    expect(bridgeFileSchema.parse(raw)).toEqual(defaultBridgeFileConfig());
  });

  it('puts each production note directly above its key', () => {
    const sfu = generateSamples().find((s) => s.file === 'sfu.yaml')?.text ?? '';
    expect(sfu).toMatch(/# PRODUCTION: the public IP[^\n]*\n(?:\s*#[^\n]*\n)*\s*node_ip: ""/);
  });

  it('refuses a note for a key the defaults do not have, so notes cannot outlive their key', () => {
    expect(() => renderSample('h', { a: { b: 1 } }, { 'a.c': 'gone' })).toThrow(/a\.c.*no such key/);
    expect(() => renderSample('h', { a: 1 }, { 'a.b': 'not a map' })).toThrow(/not inside a mapping/);
  });
});
