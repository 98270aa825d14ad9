/**
 * The SFU's typed config. Keys are LiveKit server's (pkg/config/config.go), so an operator can
 * move a `livekit.yaml` across: what we support is validated here with LiveKit's defaults, and
 * a LiveKit key we do not support yet is refused with a message naming it instead of being
 * silently ignored. `LIVEKIT_CONFIG` (YAML body) and `LIVEKIT_KEYS` ("key: secret") are applied
 * by `resolveSfuConfig`, as LiveKit does.
 */
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { ConfigError, parseWithSchema, parseYamlText, readYamlFile } from '../common/config.ts';
import { LOG_LEVELS } from '../common/logger.ts';

const port = z.number().int().min(0).max(65535);
const seconds = z.number().int().min(0);
/** A LiveKit size/length/count limit: 0 = no limit (LiveKit's meaning). */
const limitOrZero = z.number().int().min(0);
/** One of our caps: always on, so nothing from outside grows a process without bound. */
const cap = (min = 1) => z.number().int().min(min, { message: `must be at least ${min} (these caps cannot be turned off)` });

/** LiveKit pkg/routing/selector: CreateNodeSelector kinds (`random` is LiveKit's deprecated alias of `any`). */
export const NODE_SELECTOR_KINDS = ['any', 'random', 'cpuload', 'sysload', 'regionaware'] as const;
/** LiveKit pkg/routing/selector/utils.go SelectSortedNode. */
export const NODE_SORT_BY = ['random', 'sysload', 'cpuload', 'rooms', 'clients', 'tracks', 'bytespersec'] as const;

const turnServer = z.strictObject({
  host: z.string().min(1),
  port: port.default(3478),
  protocol: z.enum(['udp', 'tcp', 'tls']).default('udp'),
  username: z.string().default(''),
  credential: z.string().default(''),
  /** coturn `static-auth-secret`: credentials are minted per participant (TURN REST API). */
  secret: z.string().default(''),
  /** Lifetime of minted TURN credentials, seconds. */
  ttl: seconds.default(14400),
});

export const sfuConfigSchema = z
  .strictObject({
    port: port.default(7880),
    bind_addresses: z.array(z.string().min(1)).default([]),
    prometheus_port: port.default(0),
    /**
     * Media threads (ours; LiveKit has no such key): 1 = media on the main thread with
     * signalling (as before); N ≥ 2 = N media worker threads (node:worker_threads), each holding
     * the transports of the participants placed on it, while signalling, rooms and RoomService
     * stay on the main thread; `auto` = one per core (os.availableParallelism). A room can span
     * workers (docs/media-workers.md).
     */
    workers: z.union([z.number().int().min(1).max(256), z.literal('auto')]).default(1),
    /**
     * Which worker a joining participant's media goes to: `pack` (default) the room's worker
     * while it is not much busier than the least-loaded one (small rooms never cross threads),
     * `spread` always the least-loaded worker (one big room over every core).
     */
    worker_placement: z.enum(['pack', 'spread']).default('pack'),
    keys: z.record(z.string().min(1), z.string()).default({}),
    key_file: z.string().default(''),
    rtc: z
      .strictObject({
        port_range_start: port.default(50000),
        port_range_end: port.default(60000),
        node_ip: z.string().default(''),
        use_external_ip: z.literal(false, {
          message:
            'discovering the public address through STUN is not supported yet; set rtc.node_ip to the address clients reach',
        }).default(false),
        turn_servers: z.array(turnServer).default([]),
      })
      .prefault({}),
    room: z
      .strictObject({
        auto_create: z.boolean().default(true),
        empty_timeout: seconds.default(300),
        departure_timeout: seconds.default(20),
        max_participants: z.number().int().min(0).default(0),
      })
      .prefault({}),
    redis: z
      .strictObject({
        address: z.string().default(''),
        username: z.string().default(''),
        password: z.string().default(''),
        db: z.number().int().min(0).default(0),
        use_tls: z.boolean().default(false),
        sentinel_master_name: z.string().default(''),
        sentinel_username: z.string().default(''),
        sentinel_password: z.string().default(''),
        sentinel_addresses: z.array(z.string()).default([]),
        cluster_addresses: z.array(z.string()).default([]),
      })
      .prefault({}),
    /** LiveKit's `region`: this node's region, reported in the registry (node_selector regionaware). */
    region: z.string().default(''),
    /** LiveKit's `node_selector` (pkg/config NodeSelectorConfig, its defaults): which node a new room goes to. */
    node_selector: z
      .strictObject({
        kind: z.enum(NODE_SELECTOR_KINDS).default('any'),
        sort_by: z.enum(NODE_SORT_BY).default('random'),
        cpu_load_limit: z.number().min(0).default(0.9),
        sysload_limit: z.number().min(0).default(0.9),
        regions: z
          .array(z.strictObject({ name: z.string().min(1), lat: z.number().min(-90).max(90), lon: z.number().min(-180).max(180) }))
          .default([]),
      })
      .prefault({}),
    /** Ours, not LiveKit's: how the nodes of a Redis cluster reach each other and leave (sfu/routing). */
    cluster: z
      .strictObject({
        /** Base URL other nodes use for this node's signalling and RoomService; default http://<rtc.node_ip>:<port>. */
        signal_url: z.union([z.literal(''), z.url()]).default(''),
        /** Seconds a draining node (SIGTERM) waits for its participants to move before it exits. */
        drain_seconds: seconds.default(30),
      })
      .prefault({}),
    webhook: z
      .strictObject({
        api_key: z.string().default(''),
        urls: z.array(z.url()).default([]),
      })
      .prefault({}),
    logging: z
      .strictObject({
        level: z.enum(LOG_LEVELS).default('info'),
        json: z.boolean().default(true),
      })
      .prefault({}),
    turn: z
      .strictObject({
        enabled: z.literal(false, {
          message:
            'the embedded TURN server is not supported; run coturn and list it under rtc.turn_servers',
        }).default(false),
      })
      .prefault({}),
    /**
     * LiveKit's `limit` block (pkg/config/config.go LimitConfig, defaults of v1.13), each key
     * enforced where LiveKit enforces it (sfu/rtc/limits.ts says where and with which error).
     */
    limit: z
      .strictObject({
        num_tracks: limitOrZero.default(0),
        bytes_per_sec: z.number().min(0).default(0),
        subscription_limit_video: limitOrZero.default(0),
        subscription_limit_audio: limitOrZero.default(0),
        max_metadata_size: limitOrZero.default(512 * 1024),
        max_attributes_size: limitOrZero.default(64 * 1024),
        max_room_name_length: limitOrZero.default(256),
        max_participant_identity_length: limitOrZero.default(256),
        max_participant_name_length: limitOrZero.default(256),
        /** LiveKit allows 0 (unbounded); here a frame is always bounded. */
        signal_message_size_limit: cap().default(2 << 20),
        /** The same for agent worker connections (`/agent`, sfu/agent/socket.ts). */
        agent_signal_message_size_limit: cap().default(2 << 20),
      })
      .prefault({}),
    /** Ours, not LiveKit's: caps on what one signalling connection may send (sfu/rtc/limits.ts). */
    signal_limits: z
      .strictObject({
        /** Sustained signal messages per second per connection (token bucket refill). */
        messages_per_second: cap().default(50),
        /** Messages a connection may send at once before the sustained rate applies. */
        message_burst: cap().default(200),
        /** Bytes of one SDP offer or answer, checked before the SDP parser sees it. */
        max_sdp_bytes: cap(1024).default(512 * 1024),
        /** m= sections of one SDP (a subscriber answer carries one per subscribed track). */
        max_sdp_media_sections: cap().default(256),
        /** `a=ssrc:` lines in one m= section (werift's parser is quadratic in them). */
        max_sdp_ssrc_lines_per_section: cap().default(32),
        /** AddTrack requests waiting for their media at once. */
        max_pending_tracks: cap().default(16),
        /** Characters of an AddTrack name, cid and stream. */
        max_track_name_length: cap().default(256),
        /** Distinct trickled ICE candidates per peer connection; repeats are dropped. */
        max_candidates_per_transport: cap().default(100),
        /** Open or authenticating signalling connections from one IP address; 0 = no limit. */
        max_connections_per_ip: limitOrZero.default(128),
      })
      .prefault({}),
    /** Ours, not LiveKit's: above these the node refuses new joins (503, LiveKit's text). */
    overload: z
      .strictObject({
        /** Participants on this node, all rooms together; 0 = no limit. */
        max_participants: limitOrZero.default(0),
        /** CPU the SFU process used over the last window, in cores (1 = one core busy); 0 = off. */
        cpu_load_limit: z.number().min(0).default(0.9),
        /** Length of the measuring window, seconds. */
        window_seconds: cap().default(5),
      })
      .prefault({}),
    /** Ours, not LiveKit's: serve the connectivity test page and its dev-token endpoint on `/test` (sfu/connectivity; off in production). */
    connectivity_page: z.boolean().default(false),
  });

export type SfuConfig = z.output<typeof sfuConfigSchema>;

/** LiveKit settings we know and refuse on purpose, with what to do instead. */
const UNSUPPORTED: Record<string, string> = {
  'rtc.udp_port':
    'single-port UDP mux is not supported (werift opens one socket per ICE agent); use rtc.port_range_start/end',
  'rtc.tcp_port': 'ICE over TCP is not supported; give clients a TURN server (rtc.turn_servers)',
  'rtc.use_ice_lite': 'not supported yet; remove it',
  'rtc.stun_servers': 'not supported yet; set rtc.node_ip instead',
  'room.enabled_codecs': 'not supported yet: the SFU negotiates Opus, VP8 and H.264; remove it',
  'turn.domain': 'the embedded TURN server is not supported; use rtc.turn_servers with coturn',
  'turn.tls_port': 'the embedded TURN server is not supported; use rtc.turn_servers with coturn',
  'turn.udp_port': 'the embedded TURN server is not supported; use rtc.turn_servers with coturn',
  'turn.cert_file': 'the embedded TURN server is not supported; use rtc.turn_servers with coturn',
  'turn.key_file': 'the embedded TURN server is not supported; use rtc.turn_servers with coturn',
  'turn.external_tls': 'the embedded TURN server is not supported; use rtc.turn_servers with coturn',
  'logging.pion_level': 'not applicable (no pion here); remove it',
  'logging.sample': 'not supported yet; remove it',
  'logging.component_levels': 'not supported yet; remove it',
  'node_selector.algorithm': 'not supported; use node_selector.sort_by',
  'node_selector.bytes_per_sec_limit': 'not supported; use limit.bytes_per_sec, which refuses joins on the node',
  signal_relay: 'not supported; remove it',
  psrpc: 'not supported; remove it',
  audio: 'not supported yet (active speaker tuning); remove it',
  video: 'not supported yet; remove it',
  'limit.max_data_blob_key_length': 'data blobs are not supported; remove it',
  'limit.max_data_blobs_size': 'data blobs are not supported; remove it',
  'limit.max_data_track_custom_encoding_length': 'data tracks are not supported; remove it',
  'limit.max_api_request_body_size': 'not configurable here; the Twirp API bounds request bodies itself; remove it',
  'room.max_metadata_size': 'deprecated in LiveKit; use limit.max_metadata_size',
  'room.max_room_name_length': 'deprecated in LiveKit; use limit.max_room_name_length',
  'room.max_participant_identity_length': 'deprecated in LiveKit; use limit.max_participant_identity_length',
  development: 'not supported; use `npm start` for a development setup',
};

function describeUnknown(path: string): string {
  const why = UNSUPPORTED[path];
  return why
    ? `${path}: LiveKit setting not supported by this SFU: ${why}`
    : `${path}: unknown key (see config/sfu.yaml for the supported keys)`;
}

export const MIN_SECRET_LENGTH = 32;

/** Checks that go across keys, after the schema. */
function crossCheck(cfg: SfuConfig): string[] {
  const problems: string[] = [];
  if (cfg.rtc.port_range_start >= cfg.rtc.port_range_end) {
    problems.push(
      `rtc.port_range_start must be below rtc.port_range_end (got ${cfg.rtc.port_range_start} >= ${cfg.rtc.port_range_end})`,
    );
  } else if (cfg.rtc.port_range_start === 0) {
    problems.push('rtc.port_range_start: must be a port above 0');
  }
  for (const [key, secret] of Object.entries(cfg.keys)) {
    if (secret.length < MIN_SECRET_LENGTH) {
      problems.push(
        `keys.${key}: secret is ${secret.length} characters, LiveKit requires at least ${MIN_SECRET_LENGTH}; generate one with \`openssl rand -base64 32\``,
      );
    }
  }
  if (Object.keys(cfg.keys).length === 0) {
    problems.push('keys: at least one API key is required (keys: {<key>: <secret>}, key_file or LIVEKIT_KEYS)');
  }
  if (cfg.webhook.urls.length > 0) {
    if (!cfg.webhook.api_key) problems.push('webhook.api_key: required when webhook.urls is set');
    else if (!(cfg.webhook.api_key in cfg.keys)) {
      problems.push(`webhook.api_key: "${cfg.webhook.api_key}" is not one of the keys under keys`);
    }
  }
  const ns = cfg.node_selector;
  if (ns.kind === 'regionaware') {
    if (!cfg.region) problems.push('region: required with node_selector.kind regionaware (the name of this node\'s region)');
    else if (ns.regions.length > 0 && !ns.regions.some((r) => r.name === cfg.region)) {
      problems.push(`node_selector.regions: must list this node's region "${cfg.region}" with its lat/lon`);
    }
  }
  if (cfg.redis.sentinel_addresses.length > 0 && !cfg.redis.sentinel_master_name) {
    problems.push('redis.sentinel_master_name: required with redis.sentinel_addresses');
  }
  return problems;
}

/** `workers` as a count: `auto` is one per core. */
export function workerCount(cfg: Pick<SfuConfig, 'workers'>): number {
  return cfg.workers === 'auto' ? Math.max(1, availableParallelism()) : cfg.workers;
}

export function parseSfuConfig(raw: unknown, source: string): SfuConfig {
  const cfg = parseWithSchema(sfuConfigSchema, raw ?? {}, source, describeUnknown);
  const problems = crossCheck(cfg);
  if (problems.length) throw new ConfigError(problems, source);
  return cfg;
}

/** The defaults, as a sample config is generated from them (no keys: those are per site). */
export function defaultSfuConfig(): SfuConfig {
  return sfuConfigSchema.parse({});
}

export interface SfuConfigInputs {
  /** `--config FILE` */
  configFile?: string;
  /** `LIVEKIT_CONFIG`: YAML text; wins over the file, as in LiveKit. */
  configBody?: string;
  /** `LIVEKIT_KEYS`: YAML map "key: secret"; replaces `keys`. */
  keysEnv?: string;
  /** `--workers N|auto` from the command line: replaces the config's `workers`. */
  workers?: string;
  /** Applied last (embedded mode: loopback binding, dev keys). */
  overrides?: (raw: Record<string, unknown>) => Record<string, unknown>;
}

function asObject(value: unknown, source: string): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError(['the top level must be a YAML mapping of keys'], source);
  }
  return value as Record<string, unknown>;
}

/** Reads a config the way `livekit-server` does: file or env body, then key overrides. */
export function resolveSfuConfig(inputs: SfuConfigInputs): SfuConfig {
  let source = 'defaults';
  let raw: Record<string, unknown> = {};
  if (inputs.configBody?.trim()) {
    source = 'LIVEKIT_CONFIG';
    raw = asObject(parseYamlText(inputs.configBody, source), source);
  } else if (inputs.configFile) {
    source = inputs.configFile;
    raw = asObject(readYamlFile(inputs.configFile), source);
  }
  if (typeof raw.key_file === 'string' && raw.key_file) {
    const keys = asObject(readYamlFile(raw.key_file), raw.key_file);
    raw = { ...raw, keys: { ...(raw.keys as object), ...keys } };
  }
  if (inputs.keysEnv?.trim()) {
    raw = { ...raw, keys: asObject(parseYamlText(inputs.keysEnv, 'LIVEKIT_KEYS'), 'LIVEKIT_KEYS') };
  }
  if (inputs.workers !== undefined) {
    const w = inputs.workers.trim();
    raw = { ...raw, workers: /^\d+$/.test(w) ? Number(w) : w };
  }
  if (inputs.overrides) raw = inputs.overrides(raw);
  return parseSfuConfig(raw, source);
}
