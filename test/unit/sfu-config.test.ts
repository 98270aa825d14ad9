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

  it("takes LiveKit's limit keys with LiveKit's defaults, and our signal_limits and overload caps", () => {
    const cfg = parseSfuConfig(ok, 'test.yaml');
    // livekit/livekit pkg/config/config.go DefaultConfig.Limit (v1.13.5).
    expect(cfg.limit).toEqual({
      num_tracks: 0,
      bytes_per_sec: 0,
      subscription_limit_video: 0,
      subscription_limit_audio: 0,
      max_metadata_size: 512 * 1024,
      max_attributes_size: 64 * 1024,
      max_room_name_length: 256,
      max_participant_identity_length: 256,
      max_participant_name_length: 256,
      signal_message_size_limit: 2 * 1024 * 1024,
      agent_signal_message_size_limit: 2 * 1024 * 1024,
    });
    expect(cfg.signal_limits).toEqual({
      messages_per_second: 50,
      message_burst: 200,
      max_sdp_bytes: 512 * 1024,
      max_sdp_media_sections: 256,
      max_sdp_ssrc_lines_per_section: 32,
      max_pending_tracks: 16,
      max_track_name_length: 256,
      max_candidates_per_transport: 100,
      max_connections_per_ip: 128,
    });
    expect(cfg.overload).toEqual({ max_participants: 0, cpu_load_limit: 0.9, window_seconds: 5 });
  });

  it.each([
    ['limit', 'num_tracks', 500],
    ['limit', 'bytes_per_sec', 12.5e6],
    ['limit', 'subscription_limit_video', 9],
    ['limit', 'subscription_limit_audio', 12],
    ['limit', 'max_metadata_size', 1024],
    ['limit', 'max_attributes_size', 2048],
    ['limit', 'max_room_name_length', 64],
    ['limit', 'max_participant_identity_length', 64],
    ['limit', 'max_participant_name_length', 64],
    ['limit', 'signal_message_size_limit', 65536],
    ['signal_limits', 'messages_per_second', 20],
    ['signal_limits', 'message_burst', 40],
    ['signal_limits', 'max_sdp_bytes', 65536],
    ['signal_limits', 'max_sdp_media_sections', 64],
    ['signal_limits', 'max_sdp_ssrc_lines_per_section', 8],
    ['signal_limits', 'max_pending_tracks', 4],
    ['signal_limits', 'max_track_name_length', 64],
    ['signal_limits', 'max_candidates_per_transport', 30],
    ['signal_limits', 'max_connections_per_ip', 0],
    ['overload', 'max_participants', 300],
    ['overload', 'cpu_load_limit', 0.75],
    ['overload', 'window_seconds', 10],
  ] as const)('reads %s.%s', (block, key, value) => {
    const cfg = parseSfuConfig({ ...ok, [block]: { [key]: value } }, 'test.yaml');
    expect((cfg[block] as Record<string, number>)[key]).toBe(value);
  });

  it.each([
    ['a negative limit', { ...ok, limit: { num_tracks: -1 } }, /^limit\.num_tracks: /],
    ['a fractional length', { ...ok, limit: { max_room_name_length: 2.5 } }, /^limit\.max_room_name_length: /],
    ['an unbounded signalling frame', { ...ok, limit: { signal_message_size_limit: 0 } }, /^limit\.signal_message_size_limit: must be at least 1/],
    ['a cap turned off', { ...ok, signal_limits: { max_pending_tracks: 0 } }, /^signal_limits\.max_pending_tracks: must be at least 1 \(these caps cannot be turned off\)/],
    ['a tiny SDP cap', { ...ok, signal_limits: { max_sdp_bytes: 100 } }, /^signal_limits\.max_sdp_bytes: must be at least 1024/],
    ['a negative CPU limit', { ...ok, overload: { cpu_load_limit: -0.5 } }, /^overload\.cpu_load_limit: /],
    ['an unknown limit key', { ...ok, limit: { num_trakcs: 1 } }, /^limit\.num_trakcs: unknown key/],
    ['data blob limits', { ...ok, limit: { max_data_blobs_size: 1 } }, /^limit\.max_data_blobs_size: LiveKit setting not supported by this SFU: data blobs/],
    ['the API body limit', { ...ok, limit: { max_api_request_body_size: 1 } }, /^limit\.max_api_request_body_size: LiveKit setting not supported/],
    ['the legacy room.max_metadata_size', { ...ok, room: { max_metadata_size: 1 } }, /^room\.max_metadata_size: .*use limit\.max_metadata_size/],
    ['node_selector.algorithm', { ...ok, node_selector: { algorithm: 'lowest' } }, /^node_selector\.algorithm: LiveKit setting not supported.*sort_by/],
    ['an unknown node selector', { ...ok, node_selector: { kind: 'fastest' } }, /^node_selector\.kind: /],
    ['regionaware without a region', { ...ok, node_selector: { kind: 'regionaware' } }, /^region: required with node_selector\.kind regionaware/],
    [
      'regionaware regions without this region',
      { ...ok, region: 'eu', node_selector: { kind: 'regionaware', regions: [{ name: 'us', lat: 40, lon: -74 }] } },
      /^node_selector\.regions: must list this node's region "eu"/,
    ],
  ])('refuses %s with a message naming the key', (_name, raw, pattern) => {
    const problems = problemsOf(raw);
    expect(problems.some((p) => pattern.test(p)), problems.join('\n')).toBe(true);
  });

  it("reads LiveKit's redis, region and node_selector keys with LiveKit's defaults", () => {
    const defaults = parseSfuConfig(ok, 'test.yaml');
    expect(defaults.node_selector).toEqual({ kind: 'any', sort_by: 'random', cpu_load_limit: 0.9, sysload_limit: 0.9, regions: [] });
    const cfg = parseSfuConfig(
      {
        ...ok,
        redis: { address: 'redis:6379', username: 'u', password: 'p', db: 2, use_tls: true },
        region: 'eu-west',
        node_selector: { kind: 'regionaware', sort_by: 'rooms', sysload_limit: 0.7, regions: [{ name: 'eu-west', lat: 53.3, lon: -6.2 }] },
      },
      'test.yaml',
    );
    expect(cfg.redis).toMatchObject({ address: 'redis:6379', username: 'u', password: 'p', db: 2, use_tls: true });
    expect(cfg.region).toBe('eu-west');
    expect(cfg.node_selector).toMatchObject({ kind: 'regionaware', sort_by: 'rooms', sysload_limit: 0.7 });
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
