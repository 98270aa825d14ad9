/**
 * Generates the sample configs `config/sfu.yaml` and `config/bridge.yaml` from the code's
 * defaults (`defaultSfuConfig()`, `defaultBridgeFileConfig()`), with production notes attached
 * as comments to the keys they explain. `npm run config:generate` rewrites both files; the unit
 * test `test/unit/config-samples.test.ts` fails when a committed sample differs from what this
 * produces, so the samples cannot drift from the schema. A note whose key no longer exists in
 * the defaults is an error, not a silent drop.
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { Document, isMap, isPair, isScalar, type Pair } from 'yaml';
import { defaultSfuConfig } from '../sfu/config.ts';
import { defaultBridgeFileConfig } from '../bridge/config.ts';

export interface Sample {
  /** File name under `config/`. */
  readonly file: string;
  readonly text: string;
}

const SFU_HEADER = `
SFU sample config, generated from the defaults in sfu/config.ts by \`npm run config:generate\`.
Do not edit by hand: test/unit/config-samples.test.ts fails when this file drifts from the code.

Keys are LiveKit server's, so a livekit.yaml moves across; a LiveKit key this SFU does not
support is refused with a message naming it. Run:  npm run sfu -- --config config/sfu.yaml
Check a config without starting:                  npm run sfu -- --config FILE --validate
LIVEKIT_CONFIG (the whole YAML as text) replaces the file; LIVEKIT_KEYS ("key: secret")
replaces keys. Every value below is the default; delete what you do not change.`;

const SFU_NOTES: Record<string, string> = {
  port: 'HTTP listener: WebSocket signalling (/rtc), /healthz, /metrics and the Twirp RoomService\n' +
    'API (/twirp/livekit.RoomService/*; see README "Status"). Put TLS in front of it (wss://)\n' +
    'with a reverse proxy (README "Reverse proxy").',
  bind_addresses: 'Addresses to listen on; empty = all (::). Only the first entry is used today.',
  prometheus_port: 'Extra listener serving only /metrics; 0 = none (/metrics is on `port` anyway).',
  workers: 'Media threads (not a LiveKit key): 1 = media on the main thread; N >= 2 = N media worker\n' +
    'threads, signalling stays on the main thread; auto = one per core. `--workers` overrides it.',
  worker_placement: 'pack = keep a room on one worker while it is not much busier than the others;\n' +
    'spread = always the least-loaded worker (one big room over every core).',
  keys: 'REQUIRED: API key -> secret. Secrets shorter than 32 characters are refused.\n' +
    'Generate:  echo "APIkey$(openssl rand -hex 6): $(openssl rand -base64 32)"\n' +
    'The bridge must use one of these pairs (LIVEKIT_KEY / LIVEKIT_SECRET).',
  key_file: 'Optional YAML file of "key: secret" lines merged into keys (keep it mode 0600).',
  'rtc.port_range_start': 'UDP ports for ICE/media. werift opens one socket per PeerConnection\n' +
    '(about two per participant), so size the range for 2 x peak participants and open it in\n' +
    'the firewall (UDP, inbound). There is no single-port UDP mux and no ICE over TCP.',
  'rtc.node_ip': 'PRODUCTION: the public IP clients reach this node on. Empty = the interface\n' +
    'addresses only, which breaks calls from outside a NAT or container network.',
  'rtc.use_external_ip': 'STUN discovery of the public IP is not supported yet; must stay false (use node_ip).',
  'rtc.turn_servers': 'TURN relays handed to clients for UDP-blocked networks. With coturn and\n' +
    '`use-auth-secret`, give `secret` (coturn static-auth-secret) and per-participant\n' +
    'credentials are minted (TURN REST API, valid `ttl` seconds), e.g.\n' +
    '  - {host: turn.example.org, port: 3478, protocol: udp, secret: "<static-auth-secret>"}\n' +
    '  - {host: turn.example.org, port: 5349, protocol: tls, secret: "<static-auth-secret>"}',
  'room.auto_create': 'lk-jwt-service deployments run LiveKit with auto_create: false (the token\n' +
    'service creates rooms for full-access users); keep true for `npm start`-style trials.',
  'room.empty_timeout': 'Seconds an empty room is kept before it is closed.',
  'room.departure_timeout': 'Seconds a room is kept after the last participant left.',
  'room.max_participants': '0 = unlimited.',
  redis: 'Several SFU nodes: set this on every node (same Redis, same keys) and they form one\n' +
    'cluster: a room lives on one node, any node takes any connection (signalling is relayed,\n' +
    'media goes to the hosting node\'s rtc.node_ip). Empty address = one node, in-memory.\n' +
    'address: "host:6379"; or sentinel_* / cluster_addresses. See README "Several replicas".',
  region: "This node's region (node_selector regionaware picks the nearest region's nodes).",
  node_selector: "Which node a new room goes to, as LiveKit: kind any | cpuload | sysload | regionaware;\n" +
    'sort_by random | sysload | cpuload | rooms | clients | tracks | bytespersec; regions: [{name, lat, lon}].',
  'cluster.signal_url': 'How the other nodes reach this one (relayed signalling, RoomService). Empty =\n' +
    'http://<rtc.node_ip>:<port>; set it when nodes talk over a private network (e.g. http://sfu-1:7880).',
  'cluster.drain_seconds': 'On SIGTERM a clustered node asks its participants to reconnect through another\n' +
    'node and waits at most this long before it exits.',
  'webhook.api_key': 'Key (from keys) that signs webhooks; required when urls is set. With the bridge:\n' +
    'the key the bridge has as LIVEKIT_KEY (same secret), or it refuses them (401).',
  'webhook.urls': 'Where room/participant events are POSTed. SET THIS to the bridge\'s /sfu_webhook, e.g.\n' +
    '  - http://bridge:8080/sfu_webhook\n' +
    'so a crashed client\'s delegated call leave (Element Call\'s delay_id) is sent at once. Without\n' +
    'it the bridge only notices by polling the SFU (LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS, default 5)\n' +
    'and logs a warning naming this key.',
  'logging.level': 'debug, info, warn or error. JSON lines on stdout when json is true.',
  turn: 'The embedded TURN server is not supported: run coturn and list it under rtc.turn_servers.',
  limit: "LiveKit's limit block, same keys, defaults and errors (README \"Limits\"). Sizes are bytes,\n" +
    'lengths are bytes of UTF-8; 0 = no limit, except signal_message_size_limit (always bounded here).',
  'limit.num_tracks': 'Published + subscribed tracks on this node; at the limit joins get 503\n' +
    '"node has exceeded its configured limit". 0 = no limit.',
  'limit.bytes_per_sec': 'Media bytes in + out per second on this node (over overload.window_seconds);\n' +
    'at the limit joins get the same 503. 0 = no limit.',
  'limit.subscription_limit_video': 'Video subscriptions per participant; further ones wait for a free slot. 0 = no limit.',
  'limit.max_metadata_size': 'Participant metadata (token, update_metadata, UpdateParticipant) and room metadata.',
  'limit.max_attributes_size': 'All attributes of a participant together (keys + values).',
  'limit.signal_message_size_limit': 'Largest signalling WebSocket frame; a larger one closes the connection (1009).',
  'limit.agent_signal_message_size_limit': 'The same for agent worker connections (/agent).',
  signal_limits: "Ours, not LiveKit's: what one signalling connection may send. Breaking a cap closes\n" +
    'that participant with a leave (AddTrack / trickle caps only refuse that request).',
  'signal_limits.max_connections_per_ip': 'Behind a reverse proxy every client has the proxy\'s address: raise it or set 0.',
  overload: "Ours, not LiveKit's: above these this node refuses new joins with LiveKit's 503\n" +
    '"node has exceeded its configured limit" instead of degrading every call. cpu_load_limit is\n' +
    'CPU time of the SFU process per second (1 = one core busy; Node runs media on one thread).',
  connectivity_page: 'Ours, not LiveKit\'s: serve the connectivity test page on /test (join yourself through\n' +
    'the SFU, read ICE candidate type, RTT, loss, bitrate). DEVELOPMENT AID: whoever reaches /test can\n' +
    'mint join tokens (POST /test/token, rooms connectivity-test-* only, signed with the first key).\n' +
    'Keep it off in production, or on only briefly behind access control (`npm start` turns it on).',
};

const BRIDGE_HEADER = `
Bridge (appservice + token service) sample config, generated from the defaults in
bridge/config.ts by \`npm run config:generate\`. Do not edit by hand: a unit test fails on drift.

Run: npm run bridge -- --config config/bridge.yaml   (the file is optional)
Each key below can also be set by the variable BRIDGE_<KEY IN CAPITALS>, which wins over the file.

Token-service settings are NOT in this file: they are element-hq/lk-jwt-service's environment
variables, same names and meanings (see README "Processes and their contract"):
  LIVEKIT_URL                      wss:// URL of the SFU handed to clients (required)
  LIVEKIT_KEY / LIVEKIT_SECRET     an API key pair the SFU knows (required; secret >= 32 chars)
  LIVEKIT_KEY_FROM_FILE, LIVEKIT_SECRET_FROM_FILE, LIVEKIT_KEY_FILE ("key: secret")
  LIVEKIT_FULL_ACCESS_HOMESERVERS  server names whose users may create calls, or * (required)
  LIVEKIT_JWT_BIND                 listener, default :8080 (LIVEKIT_JWT_PORT is deprecated)
  LIVEKIT_REDIS_URL, LIVEKIT_REDIS_PASSWORD   shared state for several replicas
  LIVEKIT_AS_REGISTRATION_FILE + LIVEKIT_HS_SERVER_NAME   appservice mode (or LIVEKIT_AS_TOKEN/HS_TOKEN)
  LIVEKIT_CS_API_URL_OVERRIDES, LIVEKIT_INSECURE_SKIP_VERIFY_TLS, LIVEKIT_LOG_LEVEL,
  LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS (default 5 here, 0 in lk-jwt-service: how often the bridge
    polls the SFU for delegated-leave participants, in case a webhook is missed; 0 = off),
  LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS
Every value below is the default.`;

const BRIDGE_NOTES: Record<string, string> = {
  homeserver_url: 'Client-server API base URL of the homeserver the appservice is registered with,\n' +
    'e.g. http://synapse:8008 (inside a private network) or https://matrix.example.org.\n' +
    'Empty: LIVEKIT_CS_API_URL_OVERRIDES for LIVEKIT_HS_SERVER_NAME, else that name\'s\n' +
    '/.well-known/matrix/client (found at start, retried until found; the log says which).',
  room_delete_grace_seconds: 'A rejoin within this many seconds after a call ended keeps its SFU room. The bridge\n' +
    'creates SFU rooms with departure_timeout equal to it (appservice mode).',
  leave_grace_seconds: 'A plain {} call leave waits this long (from the event\'s time) before the participant is\n' +
    'removed; the same member\'s membership arriving meanwhile cancels it. Kicks, bans, room leaves\n' +
    'and expiry act at once (and kicks/bans revoke the token). 0 = every leave at once.',
  reconcile_interval_seconds: 'Full reconcile with homeserver and SFU; 0 = only at start.',
  membership_check: 'Issue tokens only to users joined to the Matrix room. auto: on exactly when there is an\n' +
    'appservice registration to ask the homeserver with, else off as in lk-jwt-service (the start-up\n' +
    'log says which). true without a registration refuses to start; false turns it off.',
  publish_policy: 'Who may publish media: `everyone` (lk-jwt-service\'s Go release) or `full_access`\n' +
    '(only users of LIVEKIT_FULL_ACCESS_HOMESERVERS; remote users can then only watch and listen).',
  txn_id_ttl_seconds: 'How long appservice transaction ids are remembered to drop retries. Longer than\n' +
    'Synapse\'s retry backoff (512 s); with several replicas use Redis so all replicas share it.',
  federation_allow_private_addresses: 'OpenID verification connects wherever a client\'s matrix_server_name leads; by default\n' +
    'never to loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local, CGNAT, multicast\n' +
    'or reserved addresses. Set true only for a trial whose homeservers are on a LAN.',
  federation_max_concurrent_lookups: 'OpenID verifications over federation (.well-known, SRV, userinfo) in flight at once.',
  federation_max_queued_lookups: 'Look-ups waiting for a slot; when full, token requests get 503 M_LIMIT_EXCEEDED with Retry-After.',
  agents_allowed: 'LiveKit agents (worker agent names) room members may invite into calls with the\n' +
    'io.github.matrix_rtc_backend.agent state event (docs/agents.md); empty = off.',
  agents_invite_power_level: 'Power level a member needs in the Matrix room to invite one of those agents.',
};

function pairAt(doc: Document, path: string): Pair {
  const keys = path.split('.');
  let node: unknown = doc.contents;
  let pair: Pair | undefined;
  for (const key of keys) {
    if (!isMap(node)) throw new Error(`sample note for "${path}": "${key}" is not inside a mapping`);
    pair = node.items.find((p) => isPair(p) && isScalar(p.key) && p.key.value === key);
    if (!pair) throw new Error(`sample note for "${path}": no such key in the defaults`);
    node = pair.value;
  }
  if (!pair) throw new Error(`sample note: empty path`);
  return pair;
}

/** YAML text of `value` with `header` on top and each note above its key. */
export function renderSample(header: string, value: unknown, notes: Record<string, string>): string {
  const doc = new Document(value);
  doc.commentBefore = header.trim().split('\n').map((l) => ` ${l}`.trimEnd()).join('\n');
  for (const [path, note] of Object.entries(notes)) {
    const pair = pairAt(doc, path);
    const text = note.split('\n').map((l) => ` ${l}`).join('\n');
    if (isScalar(pair.key)) pair.key.commentBefore = text;
  }
  return doc.toString({ lineWidth: 100 });
}

export function generateSamples(): Sample[] {
  return [
    { file: 'sfu.yaml', text: renderSample(SFU_HEADER, defaultSfuConfig(), SFU_NOTES) },
    { file: 'bridge.yaml', text: renderSample(BRIDGE_HEADER, defaultBridgeFileConfig(), BRIDGE_NOTES) },
  ];
}

export const CONFIG_DIR = dirname(fileURLToPath(import.meta.url));

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  for (const sample of generateSamples()) {
    const path = join(CONFIG_DIR, sample.file);
    writeFileSync(path, sample.text);
    console.log(`wrote ${path}`);
  }
}
