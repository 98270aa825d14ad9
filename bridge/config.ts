/**
 * The bridge's typed config. Token-service settings come from the environment variables of
 * element-hq/lk-jwt-service, with the same names and meanings, so a deployment can switch by
 * changing the image. Bridge-only settings (homeserver URL, grace periods, reconcile interval)
 * come from an optional YAML file, each also settable by a `BRIDGE_<KEY>` variable.
 * `resolveBridgeConfig` takes the environment as a plain map; it never reads `process.env`.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import {
  ConfigError,
  parseBindAddress,
  parseWithSchema,
  readYamlFile,
} from '../common/config.ts';
import type { LogLevel } from '../common/logger.ts';
import { splitHostPort } from './token/federation.ts';

/** Keys of the optional bridge YAML file; each also `BRIDGE_<UPPER_KEY>` in the environment. */
export const bridgeFileSchema = z.strictObject({
  /** Client-server API base URL of the homeserver the appservice is registered with. */
  homeserver_url: z.string().default(''),
  /** Seconds an SFU room lives on after its last call membership ended (a rejoin keeps it). */
  room_delete_grace_seconds: z.number().int().min(0).default(30),
  /**
   * Seconds a plain `{}` call-membership leave waits (from the event's origin_server_ts) before
   * the participant is removed; the same member's membership arriving meanwhile cancels it.
   */
  leave_grace_seconds: z.number().int().min(0).default(10),
  /** Seconds between full reconciliations with the homeserver and the SFU; 0 = only at start. */
  reconcile_interval_seconds: z.number().int().min(0).default(300),
  /**
   * Issue tokens only to users joined to the Matrix room. `auto`: on exactly when there is an
   * appservice registration to ask the homeserver with, else off (lk-jwt-service's behaviour).
   */
  membership_check: z.union([z.literal('auto'), z.boolean()]).default('auto'),
  /** Who may publish media: everyone (lk-jwt-service's Go release) or full-access homeservers' users only. */
  publish_policy: z.enum(['everyone', 'full_access']).default('everyone'),
  /** Seconds a remembered appservice transaction id is kept for deduplication. */
  txn_id_ttl_seconds: z.number().int().min(1).default(3600),
  /** Let OpenID look-ups connect to loopback/private/link-local addresses (LAN trials, tests). */
  federation_allow_private_addresses: z.boolean().default(false),
  /** OpenID verifications over federation in flight at once; more wait in the queue below. */
  federation_max_concurrent_lookups: z.number().int().min(1).default(16),
  /** Look-ups waiting for a slot; beyond this the token endpoints answer 503 with Retry-After. */
  federation_max_queued_lookups: z.number().int().min(0).default(64),
  /**
   * LiveKit agents room members may invite into calls (bridge/agents), as a YAML list or a
   * comma-separated string; empty (the default) turns the feature off.
   */
  agents_allowed: z.union([z.array(z.string().min(1)), z.string()]).default([]),
  /** Power level a member needs in the Matrix room to invite an agent. */
  agents_invite_power_level: z.number().int().default(50),
});

export type BridgeFileConfig = z.output<typeof bridgeFileSchema>;

export interface BridgeConfig extends BridgeFileConfig {
  livekit: {
    /** `LIVEKIT_URL`: the SFU's WebSocket URL handed to clients. */
    url: string;
    key: string;
    secret: string;
  };
  /** `LIVEKIT_FULL_ACCESS_HOMESERVERS`; `['*']` = everyone. */
  fullAccessHomeservers: string[];
  bind: { host: string; port: number };
  insecureSkipVerifyTls: boolean;
  redisUrl: string;
  redisPassword: string;
  /** `LIVEKIT_CS_API_URL_OVERRIDES`: server name -> client-server API base URL. */
  csApiUrlOverrides: Record<string, string>;
  appservice?: {
    asToken: string;
    hsToken: string;
    serverName: string;
    /** Path of the registration file, when given. */
    registrationFile?: string;
    /** `id` from the registration, used for the ping. */
    id?: string;
    /**
     * Where the homeserver's client-server API is, as configured: `homeserver_url`, else
     * `LIVEKIT_CS_API_URL_OVERRIDES` for `serverName`; `undefined` = its
     * `/.well-known/matrix/client`, resolved at start (bridge.ts).
     */
    homeserverUrl?: string;
    homeserverUrlFrom: HomeserverUrlSource;
  };
  /** `membership_check` resolved: `auto` became on with an appservice registration, else off. */
  membershipCheck: boolean;
  logLevel: LogLevel;
  sanityCheckIntervalSeconds: number;
  membershipCheckIntervalSeconds: number;
  /** Whether LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS was set (not the default). */
  membershipCheckIntervalSet: boolean;
}

export type Env = Record<string, string | undefined>;

/** Which setting named the appservice's homeserver URL (for the start-up log line). */
export type HomeserverUrlSource = 'homeserver_url' | 'LIVEKIT_CS_API_URL_OVERRIDES' | '.well-known/matrix/client';

/** What a ConfigError says when `membership_check: true` has no registration to run with. */
function membershipCheckProblem(key: string): string {
  return `${key}: true needs an appservice registration (the homeserver is asked who is in a room with its as_token): ` +
    'set LIVEKIT_AS_REGISTRATION_FILE (or LIVEKIT_AS_TOKEN and LIVEKIT_HS_TOKEN) and LIVEKIT_HS_SERVER_NAME, ' +
    `or set ${key} to auto (the default) or false to issue tokens without the check, as lk-jwt-service does`;
}

export const SKIP_VERIFY_TLS_VALUE = 'YES_I_KNOW_WHAT_I_AM_DOING';
export const MIN_SECRET_LENGTH = 32;
export const DEFAULT_SANITY_CHECK_INTERVAL_SECONDS = 5;

function readTrimmed(path: string, variable: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new ConfigError([`${variable}: cannot read "${path}": ${(err as Error).message}`]);
  }
}

function intVar(env: Env, name: string, fallback: number, problems: string[]): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n)) {
    problems.push(`${name}: "${raw}" is not a whole number of seconds >= 0`);
    return fallback;
  }
  return n;
}

function logLevelOf(raw: string | undefined, problems: string[]): LogLevel {
  const v = (raw ?? '').trim().toLowerCase();
  if (v === '' || v === 'info') return 'info';
  if (v === 'debug') return 'debug';
  if (v === 'warn' || v === 'warning') return 'warn';
  if (v === 'error') return 'error';
  problems.push(`LIVEKIT_LOG_LEVEL: "${raw}" is not one of debug, info, warn, error`);
  return 'info';
}

function fileConfigFromEnv(env: Env): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, type] of Object.entries(bridgeFileSchema.shape)) {
    const raw = env[`BRIDGE_${key.toUpperCase()}`];
    if (raw === undefined || raw === '') continue;
    const inner = type.unwrap();
    const takesBoolean = inner instanceof z.ZodBoolean || (inner instanceof z.ZodUnion && inner.options.some((o) => o instanceof z.ZodBoolean));
    if (takesBoolean) out[key] = raw === 'true' || raw === '1' ? true : raw === 'false' || raw === '0' ? false : raw;
    else if (inner instanceof z.ZodNumber) out[key] = /^-?\d+$/.test(raw) ? Number(raw) : raw;
    else out[key] = raw;
  }
  return out;
}

interface Registration {
  id?: unknown;
  as_token?: unknown;
  hs_token?: unknown;
}

/** Builds the bridge config from the environment (and the optional YAML file). */
export function resolveBridgeConfig(env: Env, configFile?: string): BridgeConfig {
  const problems: string[] = [];

  // Bridge-only settings: file first, then BRIDGE_* variables on top.
  const fileRaw = configFile ? readYamlFile(configFile) : {};
  if (fileRaw === null || typeof fileRaw !== 'object' || Array.isArray(fileRaw)) {
    throw new ConfigError(['the top level must be a YAML mapping of keys'], configFile);
  }
  const fileCfg = parseWithSchema(
    bridgeFileSchema,
    { ...(fileRaw as object), ...fileConfigFromEnv(env) },
    configFile ?? 'BRIDGE_* environment',
  );

  const url = env.LIVEKIT_URL?.trim() ?? '';
  if (!url) problems.push('LIVEKIT_URL: required (the SFU URL clients connect to, e.g. wss://sfu.example.org)');
  else if (!/^(wss?|https?):\/\//.test(url)) problems.push(`LIVEKIT_URL: "${url}" must start with ws://, wss://, http:// or https://`);

  let key = env.LIVEKIT_KEY?.trim() ?? '';
  let secret = env.LIVEKIT_SECRET?.trim() ?? '';
  if (env.LIVEKIT_KEY_FROM_FILE?.trim()) key = readTrimmed(env.LIVEKIT_KEY_FROM_FILE.trim(), 'LIVEKIT_KEY_FROM_FILE');
  if (env.LIVEKIT_SECRET_FROM_FILE?.trim()) secret = readTrimmed(env.LIVEKIT_SECRET_FROM_FILE.trim(), 'LIVEKIT_SECRET_FROM_FILE');
  if (env.LIVEKIT_KEY_FILE?.trim()) {
    const text = readTrimmed(env.LIVEKIT_KEY_FILE.trim(), 'LIVEKIT_KEY_FILE');
    const i = text.indexOf(':');
    if (i <= 0) problems.push('LIVEKIT_KEY_FILE: the file must hold "key: secret"');
    else {
      key = text.slice(0, i).trim();
      secret = text.slice(i + 1).trim();
    }
  }
  if (!key) problems.push('LIVEKIT_KEY: required (or LIVEKIT_KEY_FROM_FILE / LIVEKIT_KEY_FILE)');
  if (!secret) problems.push('LIVEKIT_SECRET: required (or LIVEKIT_SECRET_FROM_FILE / LIVEKIT_KEY_FILE)');
  else if (secret.length < MIN_SECRET_LENGTH) {
    problems.push(
      `LIVEKIT_SECRET: is ${secret.length} characters; LiveKit refuses secrets shorter than ${MIN_SECRET_LENGTH} (generate one with \`openssl rand -base64 32\`)`,
    );
  }

  const fullAccessRaw = env.LIVEKIT_FULL_ACCESS_HOMESERVERS?.trim() ?? '';
  const fullAccessHomeservers = fullAccessRaw.split(/[\s,]+/).filter(Boolean);
  if (fullAccessHomeservers.length === 0) {
    problems.push('LIVEKIT_FULL_ACCESS_HOMESERVERS: required: the homeserver names whose users may create calls ("*" for all)');
  }

  if (env.LIVEKIT_JWT_BIND?.trim() && env.LIVEKIT_JWT_PORT?.trim()) {
    problems.push('LIVEKIT_JWT_BIND and LIVEKIT_JWT_PORT: set only one (LIVEKIT_JWT_PORT is deprecated)');
  }
  let bind = { host: '::', port: 8080 };
  try {
    if (env.LIVEKIT_JWT_PORT?.trim()) bind = parseBindAddress(`:${env.LIVEKIT_JWT_PORT.trim()}`, 'LIVEKIT_JWT_PORT');
    else bind = parseBindAddress(env.LIVEKIT_JWT_BIND?.trim() || ':8080', 'LIVEKIT_JWT_BIND');
  } catch (err) {
    problems.push(...(err as ConfigError).problems);
  }

  const csApiUrlOverrides: Record<string, string> = {};
  for (const pair of (env.LIVEKIT_CS_API_URL_OVERRIDES ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const i = pair.indexOf('=');
    const name = pair.slice(0, i).trim();
    const target = pair.slice(i + 1).trim();
    if (i <= 0 || !/^https?:\/\//.test(target)) {
      problems.push(`LIVEKIT_CS_API_URL_OVERRIDES: "${pair}" must be server_name=https://url`);
    } else csApiUrlOverrides[name] = target.replace(/\/+$/, '');
  }

  // Appservice mode: tokens and server name all set, or all empty.
  let asToken = env.LIVEKIT_AS_TOKEN?.trim() ?? '';
  let hsToken = env.LIVEKIT_HS_TOKEN?.trim() ?? '';
  let registrationId: string | undefined;
  const registrationFile = env.LIVEKIT_AS_REGISTRATION_FILE?.trim() || undefined;
  if (registrationFile) {
    const reg = readYamlFile(registrationFile) as Registration | null;
    if (typeof reg?.as_token !== 'string' || typeof reg.hs_token !== 'string') {
      problems.push(`LIVEKIT_AS_REGISTRATION_FILE: "${registrationFile}" has no as_token/hs_token strings`);
    } else {
      asToken = reg.as_token;
      hsToken = reg.hs_token;
      registrationId = typeof reg.id === 'string' ? reg.id : undefined;
    }
  }
  const serverName = env.LIVEKIT_HS_SERVER_NAME?.trim() ?? '';
  const asParts = [asToken, hsToken, serverName].filter(Boolean).length;
  if (asParts !== 0 && asParts !== 3) {
    problems.push(
      'The app service token(s) (LIVEKIT_AS_TOKEN/LIVEKIT_HS_TOKEN or LIVEKIT_AS_REGISTRATION_FILE) and LIVEKIT_HS_SERVER_NAME must either all be set or all be left empty',
    );
  }
  if (serverName && !splitHostPort(serverName)) {
    problems.push(`LIVEKIT_HS_SERVER_NAME: "${serverName}" is not a Matrix server name (host or host:port, e.g. example.org)`);
  }
  const homeserverUrl = fileCfg.homeserver_url.trim().replace(/\/+$/, '') || csApiUrlOverrides[serverName] || undefined;
  if (fileCfg.homeserver_url.trim() && !/^https?:\/\/[^/]/.test(fileCfg.homeserver_url.trim())) {
    problems.push(`homeserver_url (BRIDGE_HOMESERVER_URL): "${fileCfg.homeserver_url}" must start with http:// or https:// (e.g. http://synapse:8008)`);
  }
  const homeserverUrlFrom: HomeserverUrlSource = fileCfg.homeserver_url.trim()
    ? 'homeserver_url'
    : csApiUrlOverrides[serverName]
      ? 'LIVEKIT_CS_API_URL_OVERRIDES'
      : '.well-known/matrix/client';

  // The membership check needs the registration's as_token; `auto` follows whether there is one.
  const hasRegistration = asParts === 3;
  if (fileCfg.membership_check === true && !hasRegistration) {
    problems.push(membershipCheckProblem(env.BRIDGE_MEMBERSHIP_CHECK?.trim() ? 'BRIDGE_MEMBERSHIP_CHECK' : 'membership_check'));
  }
  const membershipCheck = fileCfg.membership_check === 'auto' ? hasRegistration : fileCfg.membership_check;

  const insecureRaw = env.LIVEKIT_INSECURE_SKIP_VERIFY_TLS?.trim() ?? '';
  const logLevel = logLevelOf(env.LIVEKIT_LOG_LEVEL, problems);
  // Default 5 (lk-jwt-service: 0 = off): the bridge polls the SFU itself for delegated leaves, so a
  // missed webhook ends a crashed client's membership within seconds, well inside Element Call's
  // own 18 s leave delay (token/delayed-leave.ts; one ListParticipants per room per interval).
  const sanityCheckIntervalSeconds = intVar(env, 'LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS', DEFAULT_SANITY_CHECK_INTERVAL_SECONDS, problems);
  const membershipCheckIntervalSeconds = intVar(env, 'LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS', 30, problems);

  if (problems.length) throw new ConfigError(problems, 'environment');
  return {
    ...fileCfg,
    livekit: { url, key, secret },
    fullAccessHomeservers,
    bind,
    insecureSkipVerifyTls: insecureRaw === SKIP_VERIFY_TLS_VALUE,
    redisUrl: env.LIVEKIT_REDIS_URL?.trim() ?? '',
    redisPassword: env.LIVEKIT_REDIS_PASSWORD?.trim() ?? '',
    csApiUrlOverrides,
    appservice:
      hasRegistration
        ? { asToken, hsToken, serverName, registrationFile, id: registrationId, homeserverUrl, homeserverUrlFrom }
        : undefined,
    membershipCheck,
    logLevel,
    sanityCheckIntervalSeconds,
    membershipCheckIntervalSeconds,
    membershipCheckIntervalSet: Boolean(env.LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS?.trim()),
  };
}

/** `agents_allowed` as a list of names (empty = agents off). */
export function allowedAgents(cfg: Pick<BridgeFileConfig, 'agents_allowed'>): string[] {
  const raw = cfg.agents_allowed;
  return (Array.isArray(raw) ? raw : raw.split(',')).map((s) => s.trim()).filter(Boolean);
}

export function defaultBridgeFileConfig(): BridgeFileConfig {
  return bridgeFileSchema.parse({});
}
