/**
 * SFU config validation: LiveKit's keys and defaults, and a clear error naming the key for
 * every kind of bad input an operator may bring from a livekit.yaml.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../common/config.ts';
import { defaultSfuConfig, parseSfuConfig, resolveSfuConfig } from '../../sfu/config.ts';

const SECRET = 'a'.repeat(32);
const ok = { keys: { devkey: SECRET } };

function problemsOf(raw: unknown): string[] {
  try {
    parseSfuConfig(raw, 'test.yaml');
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  return [];
}

describe('sfu config', () => {
  it("takes LiveKit's defaults", () => {
    const cfg = parseSfuConfig(ok, 'test.yaml');
    expect(cfg.port).toBe(7880);
    expect(cfg.rtc.port_range_start).toBe(50000);
    expect(cfg.rtc.port_range_end).toBe(60000);
    expect(cfg.room).toEqual({ auto_create: true, empty_timeout: 300, departure_timeout: 20, max_participants: 0 });
    expect(defaultSfuConfig().keys).toEqual({});
  });

  it.each([
    ['an unknown key', { ...ok, rtc: { port_range_start: 50000, bogus: 1 } }, /^rtc\.bogus: unknown key/],
    ['an unknown top-level key', { ...ok, nonsense: true }, /^nonsense: unknown key/],
    ['a port range reversed', { ...ok, rtc: { port_range_start: 60000, port_range_end: 50000 } }, /rtc\.port_range_start must be below rtc\.port_range_end/],
    ['a secret shorter than 32 characters', { keys: { devkey: 'short' } }, /^keys\.devkey: secret is 5 characters, LiveKit requires at least 32/],
    ['no keys at all', {}, /^keys: at least one API key is required/],
    ['a single UDP port (no mux in werift)', { ...ok, rtc: { udp_port: 7882 } }, /^rtc\.udp_port: LiveKit setting not supported by this SFU: single-port UDP mux/],
    ['the embedded TURN server', { ...ok, turn: { enabled: true } }, /^turn\.enabled: .*embedded TURN server is not supported/],
    ['a port out of range', { ...ok, port: 70000 }, /^port: /],
    ['a wrong type', { ...ok, room: { auto_create: 'yes' } }, /^room\.auto_create: /],
    ['webhook urls without api_key', { ...ok, webhook: { urls: ['http://127.0.0.1:1/hook'] } }, /^webhook\.api_key: required/],
    ['webhook api_key not among keys', { ...ok, webhook: { api_key: 'other', urls: ['http://127.0.0.1:1/hook'] } }, /^webhook\.api_key: "other" is not one of the keys/],
    ['use_external_ip', { ...ok, rtc: { use_external_ip: true } }, /^rtc\.use_external_ip: .*set rtc\.node_ip/],
  ])('refuses %s with a message naming the key', (_name, raw, pattern) => {
    const problems = problemsOf(raw);
    expect(problems.some((p) => pattern.test(p)), problems.join('\n')).toBe(true);
  });

  it('reads LIVEKIT_CONFIG over the file and LIVEKIT_KEYS over keys, as livekit-server does', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sfu-cfg-'));
    const file = join(dir, 'livekit.yaml');
    writeFileSync(file, `port: 9000\nkeys:\n  filekey: ${SECRET}\n`);
    expect(resolveSfuConfig({ configFile: file }).port).toBe(9000);
    const fromBody = resolveSfuConfig({ configFile: file, configBody: `port: 9100\nkeys: {bodykey: ${SECRET}}` });
    expect(fromBody.port).toBe(9100);
    expect(Object.keys(fromBody.keys)).toEqual(['bodykey']);
    const withEnvKeys = resolveSfuConfig({ configFile: file, keysEnv: `envkey: ${SECRET}` });
    expect(withEnvKeys.keys).toEqual({ envkey: SECRET });
  });

  it('reads keys from key_file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sfu-cfg-'));
    const keyFile = join(dir, 'keys.yaml');
    writeFileSync(keyFile, `k1: ${SECRET}\n`);
    const cfg = resolveSfuConfig({ configBody: `key_file: ${keyFile}` });
    expect(cfg.keys).toEqual({ k1: SECRET });
  });

  it('names the file and line of a YAML syntax error', () => {
    expect(() => resolveSfuConfig({ configBody: 'port: [1,\n' })).toThrow(/LIVEKIT_CONFIG.*not valid YAML/s);
  });
});
