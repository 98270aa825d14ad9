/**
 * Bridge config: lk-jwt-service's environment variables with their names and meanings, and
 * the bridge-only settings from YAML or BRIDGE_* variables.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../common/config.ts';
import { resolveBridgeConfig, type Env } from '../../bridge/config.ts';

const SECRET = 's'.repeat(32);
const base: Env = {
  LIVEKIT_URL: 'wss://sfu.example.org',
  LIVEKIT_KEY: 'key',
  LIVEKIT_SECRET: SECRET,
  LIVEKIT_FULL_ACCESS_HOMESERVERS: 'example.org, other.org',
};

function problemsOf(env: Env): string[] {
  try {
    resolveBridgeConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  return [];
}

describe('bridge config', () => {
  it("applies lk-jwt-service's defaults", () => {
    const cfg = resolveBridgeConfig(base);
    expect(cfg.bind).toEqual({ host: '::', port: 8080 });
    expect(cfg.fullAccessHomeservers).toEqual(['example.org', 'other.org']);
    expect(cfg.insecureSkipVerifyTls).toBe(false);
    expect(cfg.appservice).toBeUndefined();
    expect(cfg.logLevel).toBe('info');
    expect(cfg.membershipCheckIntervalSeconds).toBe(30);
    expect(cfg.membership_check).toBe('auto');
    expect(cfg.membershipCheck).toBe(false);
  });

  it("runs with only lk-jwt-service's variables: no membership check, no appservice", () => {
    const cfg = resolveBridgeConfig({ ...base, LIVEKIT_JWT_BIND: '127.0.0.1:8080', LIVEKIT_CS_API_URL_OVERRIDES: 'example.org=http://127.0.0.1:8008' });
    expect(cfg.membershipCheck).toBe(false);
    expect(cfg.appservice).toBeUndefined();
  });

  const appserviceEnv: Env = { ...base, LIVEKIT_AS_TOKEN: 'AS', LIVEKIT_HS_TOKEN: 'HS', LIVEKIT_HS_SERVER_NAME: 'example.org' };

  it('turns the membership check on by itself with an appservice registration', () => {
    expect(resolveBridgeConfig(appserviceEnv).membershipCheck).toBe(true);
    expect(resolveBridgeConfig({ ...appserviceEnv, BRIDGE_MEMBERSHIP_CHECK: 'false' }).membershipCheck).toBe(false);
    expect(resolveBridgeConfig({ ...appserviceEnv, BRIDGE_MEMBERSHIP_CHECK: 'auto' }).membershipCheck).toBe(true);
  });

  it('refuses an explicit membership check without a registration, naming the key it came from and the fix', () => {
    const fromEnv = problemsOf({ ...base, BRIDGE_MEMBERSHIP_CHECK: 'true' });
    expect(fromEnv).toHaveLength(1);
    expect(fromEnv[0]).toMatch(/^BRIDGE_MEMBERSHIP_CHECK: true needs an appservice registration/);
    expect(fromEnv[0]).toMatch(/LIVEKIT_AS_REGISTRATION_FILE/);
    expect(fromEnv[0]).toMatch(/LIVEKIT_HS_SERVER_NAME/);
    expect(fromEnv[0]).toMatch(/auto \(the default\) or false/);
    const dir = mkdtempSync(join(tmpdir(), 'bridge-cfg-'));
    const file = join(dir, 'bridge.yaml');
    writeFileSync(file, 'membership_check: true\n');
    expect(() => resolveBridgeConfig(base, file)).toThrow(/membership_check: true needs an appservice registration/);
    expect(resolveBridgeConfig(appserviceEnv, file).membershipCheck).toBe(true);
  });

  it('refuses a membership_check that is neither auto nor a boolean', () => {
    expect(problemsOf({ ...base, BRIDGE_MEMBERSHIP_CHECK: 'sometimes' }).some((p) => p.startsWith('membership_check: '))).toBe(true);
  });

  it.each<[string, Env, string | undefined, string]>([
    ['BRIDGE_HOMESERVER_URL first', { BRIDGE_HOMESERVER_URL: 'http://synapse:8008/', LIVEKIT_CS_API_URL_OVERRIDES: 'example.org=http://other:8008' }, 'http://synapse:8008', 'homeserver_url'],
    ['then the override for LIVEKIT_HS_SERVER_NAME', { LIVEKIT_CS_API_URL_OVERRIDES: 'elsewhere.org=http://x:1,example.org=http://127.0.0.1:8008' }, 'http://127.0.0.1:8008', 'LIVEKIT_CS_API_URL_OVERRIDES'],
    ['else the server name\'s .well-known at start', { LIVEKIT_CS_API_URL_OVERRIDES: 'elsewhere.org=http://x:1' }, undefined, '.well-known/matrix/client'],
  ])("finds the appservice's homeserver URL: %s", (_name, extra, url, from) => {
    const cfg = resolveBridgeConfig({ ...appserviceEnv, ...extra });
    expect(cfg.appservice?.homeserverUrl).toBe(url);
    expect(cfg.appservice?.homeserverUrlFrom).toBe(from);
  });

  it.each([
    ['a server name that is not one', { ...appserviceEnv, LIVEKIT_HS_SERVER_NAME: 'https://example.org' }, /^LIVEKIT_HS_SERVER_NAME: /],
    ['a homeserver URL without a scheme', { ...appserviceEnv, BRIDGE_HOMESERVER_URL: 'synapse:8008' }, /^homeserver_url \(BRIDGE_HOMESERVER_URL\): /],
  ])('refuses %s', (_n, env, pattern) => {
    const problems = problemsOf(env);
    expect(problems.some((p) => pattern.test(p)), problems.join('\n')).toBe(true);
  });

  it.each([
    ['LIVEKIT_URL missing', { ...base, LIVEKIT_URL: '' }, /^LIVEKIT_URL: required/],
    ['a short secret', { ...base, LIVEKIT_SECRET: 'tooshort' }, /^LIVEKIT_SECRET: is 8 characters/],
    ['no full-access list', { ...base, LIVEKIT_FULL_ACCESS_HOMESERVERS: '' }, /^LIVEKIT_FULL_ACCESS_HOMESERVERS: required/],
    ['both bind and deprecated port', { ...base, LIVEKIT_JWT_BIND: ':1', LIVEKIT_JWT_PORT: '2' }, /LIVEKIT_JWT_BIND and LIVEKIT_JWT_PORT/],
    ['a bad bind', { ...base, LIVEKIT_JWT_BIND: 'nonsense' }, /^LIVEKIT_JWT_BIND: /],
    ['half the appservice settings', { ...base, LIVEKIT_AS_TOKEN: 'a' }, /must either all be set or all be left empty/],
    ['a bad log level', { ...base, LIVEKIT_LOG_LEVEL: 'loud' }, /^LIVEKIT_LOG_LEVEL: /],
    ['a bad interval', { ...base, LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS: '1.5' }, /^LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS: /],
    ['a bad CS API override', { ...base, LIVEKIT_CS_API_URL_OVERRIDES: 'example.org' }, /^LIVEKIT_CS_API_URL_OVERRIDES: /],
    ['a bad BRIDGE_ number', { ...base, BRIDGE_ROOM_DELETE_GRACE_SECONDS: 'soon' }, /^room_delete_grace_seconds: /],
  ])('refuses %s, naming the variable', (_n, env, pattern) => {
    const problems = problemsOf(env);
    expect(problems.some((p) => pattern.test(p)), problems.join('\n')).toBe(true);
  });

  it('skips TLS verification only for the exact opt-in value', () => {
    expect(resolveBridgeConfig({ ...base, LIVEKIT_INSECURE_SKIP_VERIFY_TLS: 'true' }).insecureSkipVerifyTls).toBe(false);
    expect(
      resolveBridgeConfig({ ...base, LIVEKIT_INSECURE_SKIP_VERIFY_TLS: 'YES_I_KNOW_WHAT_I_AM_DOING' }).insecureSkipVerifyTls,
    ).toBe(true);
  });

  it('takes key and secret from LIVEKIT_KEY_FILE over the plain variables', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bridge-cfg-'));
    const keyFile = join(dir, 'key');
    writeFileSync(keyFile, `filekey: ${'f'.repeat(40)}\n`);
    const cfg = resolveBridgeConfig({ ...base, LIVEKIT_KEY_FILE: keyFile });
    expect(cfg.livekit.key).toBe('filekey');
    expect(cfg.livekit.secret).toBe('f'.repeat(40));
  });

  it('reads the appservice tokens from the registration file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bridge-cfg-'));
    const reg = join(dir, 'reg.yaml');
    writeFileSync(reg, 'id: rtc\nas_token: AS\nhs_token: HS\nurl: http://127.0.0.1:8080\n');
    const cfg = resolveBridgeConfig({ ...base, LIVEKIT_AS_REGISTRATION_FILE: reg, LIVEKIT_HS_SERVER_NAME: 'example.org' });
    expect(cfg.appservice).toEqual({
      asToken: 'AS',
      hsToken: 'HS',
      serverName: 'example.org',
      registrationFile: reg,
      id: 'rtc',
      homeserverUrl: undefined,
      homeserverUrlFrom: '.well-known/matrix/client',
    });
  });

  it('layers BRIDGE_* variables over the YAML file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bridge-cfg-'));
    const file = join(dir, 'bridge.yaml');
    writeFileSync(file, 'homeserver_url: http://hs.local:8008\nroom_delete_grace_seconds: 10\n');
    const cfg = resolveBridgeConfig({ ...base, BRIDGE_ROOM_DELETE_GRACE_SECONDS: '5', BRIDGE_MEMBERSHIP_CHECK: 'false' }, file);
    expect(cfg.homeserver_url).toBe('http://hs.local:8008');
    expect(cfg.room_delete_grace_seconds).toBe(5);
    expect(cfg.membership_check).toBe(false);
  });

  it('refuses an unknown key in the YAML file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bridge-cfg-'));
    const file = join(dir, 'bridge.yaml');
    writeFileSync(file, 'homeserver: x\n');
    expect(() => resolveBridgeConfig(base, file)).toThrow(/homeserver: unknown key/);
  });
});
