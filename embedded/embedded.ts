/**
 * The embedded default behind `npm start`: SFU and bridge in one process, in-memory state, no
 * Redis, listening on loopback only, with a development key pair from the data folder; the SFU's
 * webhooks go to the bridge's `/sfu_webhook`, signed with that key. The bridge takes `BRIDGE_*`
 * settings and lk-jwt-service's appservice variables (`embeddedBridgeEnv`), so `npm start` can
 * check call membership at a local homeserver; the SFU URL, key pair, bind address and full
 * access are set here. Built by `createEmbedded(opts)` so a test can start it on free ports and
 * stop it.
 */
import type { Registry } from 'prom-client';
import type { Clock } from '../common/clock.ts';
import type { Logger } from '../common/logger.ts';
import { createMetricsRegistry } from '../common/metrics.ts';
import { resolveBridgeConfig, type BridgeConfig, type Env } from '../bridge/config.ts';
import { createBridge, type BridgeProcessDeps } from '../bridge/bridge.ts';
import { resolveSfuConfig } from '../sfu/config.ts';
import { createSfuServer } from '../sfu/server.ts';
import { loadOrCreateDevKeys } from './dev-keys.ts';

export interface EmbeddedOptions {
  dataDir: string;
  sfuPort: number;
  bridgePort: number;
  host: string;
  logger: Logger;
  clock: Clock;
  /** The bridge listener's registry (the process's, holding its fault counter); made when absent. */
  metrics?: Registry;
  /** Extra environment for the bridge (`embeddedBridgeEnv`); the other LIVEKIT_* are set here. */
  env?: Env;
  /** Token-service overrides (a private CA for OpenID look-ups, as `createBridge` takes). */
  token?: BridgeProcessDeps['token'];
}

export interface EmbeddedUrls {
  sfuUrl: string;
  livekitUrl: string;
  bridgeUrl: string;
  apiKey: string;
  keysFile: string;
  keysCreated: boolean;
  /** Where the SFU posts its webhooks (empty with bridge port 0). */
  webhookUrls: string[];
  /** The appservice registration in use (membership check on), or undefined (off). */
  appservice?: Pick<NonNullable<BridgeConfig['appservice']>, 'registrationFile' | 'serverName' | 'homeserverUrl' | 'homeserverUrlFrom'>;
}

/**
 * lk-jwt-service variables the embedded bridge takes from the environment: the appservice
 * registration and where its homeserver is, TLS verification of OpenID look-ups, the SFU poll.
 * Not LIVEKIT_URL / KEY / SECRET / JWT_BIND / FULL_ACCESS_HOMESERVERS (set by `createEmbedded`)
 * nor LIVEKIT_REDIS_* (embedded state is in memory).
 */
export const EMBEDDED_LIVEKIT_VARIABLES = [
  'LIVEKIT_AS_REGISTRATION_FILE',
  'LIVEKIT_AS_TOKEN',
  'LIVEKIT_HS_TOKEN',
  'LIVEKIT_HS_SERVER_NAME',
  'LIVEKIT_CS_API_URL_OVERRIDES',
  'LIVEKIT_INSECURE_SKIP_VERIFY_TLS',
  'LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS',
] as const;

/** Read by embedded/main.ts itself (the logger's level), so neither forwarded nor ignored. */
const READ_BY_MAIN = ['LIVEKIT_LOG_LEVEL'];

/**
 * What of an environment goes to the embedded bridge (`BRIDGE_*` and EMBEDDED_LIVEKIT_VARIABLES),
 * and the other LIVEKIT_* variables set there, which `npm start` does not take (it says so).
 */
export function embeddedBridgeEnv(env: Env): { env: Env; ignored: string[] } {
  const taken = new Set<string>(EMBEDDED_LIVEKIT_VARIABLES);
  const out: Env = {};
  const ignored: string[] = [];
  for (const [k, v] of Object.entries(env)) {
    if (k.startsWith('BRIDGE_') || taken.has(k)) out[k] = v;
    else if (k.startsWith('LIVEKIT_') && !READ_BY_MAIN.includes(k) && v) ignored.push(k);
  }
  return { env: out, ignored: ignored.toSorted() };
}

export interface Embedded {
  start(): Promise<EmbeddedUrls>;
  stop(): Promise<void>;
}

/** Where the SFU posts its webhooks: the bridge's `/sfu_webhook` (unknown while the bridge port is 0). */
export function embeddedWebhookUrls(host: string, bridgePort: number): string[] {
  const hostForUrl = host.includes(':') ? `[${host}]` : host;
  return bridgePort > 0 ? [`http://${hostForUrl}:${bridgePort}/sfu_webhook`] : [];
}

export function createEmbedded(opts: EmbeddedOptions): Embedded {
  const { keys, created, path } = loadOrCreateDevKeys(opts.dataDir);
  const sfuConfig = resolveSfuConfig({
    overrides: (raw) => ({
      ...raw,
      port: opts.sfuPort,
      bind_addresses: [opts.host],
      keys: { [keys.key]: keys.secret },
      rtc: { node_ip: opts.host },
      // The bridge ends a crashed client's delegated call leave on the SFU's participant_left; with
      // --bridge-port 0 it has only its own poll of the SFU (LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS).
      webhook: { api_key: keys.key, urls: embeddedWebhookUrls(opts.host, opts.bridgePort) },
      connectivity_page: true,
    }),
  });
  const hostForUrl = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  const livekitUrl = `ws://${hostForUrl}:${opts.sfuPort}`;
  const bridgeConfig = resolveBridgeConfig({
    ...opts.env,
    LIVEKIT_URL: livekitUrl,
    LIVEKIT_KEY: keys.key,
    LIVEKIT_SECRET: keys.secret,
    LIVEKIT_FULL_ACCESS_HOMESERVERS: '*',
    LIVEKIT_JWT_BIND: `${hostForUrl}:${opts.bridgePort}`,
  });
  // One registry for both halves (their metric names do not overlap; the fault counter is shared).
  const metrics = opts.metrics ?? createMetricsRegistry();
  const sfu = createSfuServer({
    config: sfuConfig,
    logger: opts.logger.child({ component: 'sfu' }),
    clock: opts.clock,
    metrics,
  });
  const bridge = createBridge({
    config: bridgeConfig,
    logger: opts.logger.child({ component: 'bridge' }),
    clock: opts.clock,
    metrics,
    ...(opts.token ? { token: opts.token } : {}),
  });
  const as = bridgeConfig.appservice;
  return {
    async start() {
      const s = await sfu.start();
      try {
        const b = await bridge.start();
        return {
          sfuUrl: s.url,
          livekitUrl,
          bridgeUrl: b.url,
          apiKey: keys.key,
          keysFile: path,
          keysCreated: created,
          webhookUrls: sfuConfig.webhook.urls,
          ...(as ? { appservice: { registrationFile: as.registrationFile, serverName: as.serverName, homeserverUrl: as.homeserverUrl, homeserverUrlFrom: as.homeserverUrlFrom } } : {}),
        };
      } catch (err) {
        await sfu.stop();
        throw err;
      }
    },
    async stop() {
      await Promise.allSettled([bridge.stop(), sfu.stop()]);
    },
  };
}
