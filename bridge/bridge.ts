/**
 * The whole bridge process, assembled: one HTTP listener carrying the token service
 * (lk-jwt-service routes and, with an appservice registration, the MSC4195 proxied routes) and,
 * when the appservice is configured, the appservice API with membership tracking, SFU room
 * lifecycle and reconcile. State lives in Redis when `LIVEKIT_REDIS_URL` is set (shared by
 * replicas), in memory otherwise. The appservice's homeserver is found as `homeserver_url`, else
 * `LIVEKIT_CS_API_URL_OVERRIDES` for `LIVEKIT_HS_SERVER_NAME`, else that name's
 * `.well-known/matrix/client` (as lk-jwt-service's appservice mode does); `start()` says which
 * it used, and when it cannot find it keeps the token service up, logs why with the fix and
 * retries (1 s doubling to 60 s on the clock), starting the appservice once it is found.
 * Built by `createBridge(deps)`; `start()` binds the listener before the appservice pings the
 * homeserver (the ping calls us back); `stop()` undoes it all.
 */
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Clock, TimerHandle } from '../common/clock.ts';
import type { Logger } from '../common/logger.ts';
import { createRedisConnection, type RedisClient } from '../common/redis.ts';
import { APPSERVICE_PREFIX, createAppservice, type Appservice } from './appservice/appservice.ts';
import { createAppserviceClient, type AppserviceClient } from './homeserver/client.ts';
import type { BridgeConfig } from './config.ts';
import { createSfuRoomService, roomTimeoutsForGrace } from './sfu/room-service.ts';
import { createMemoryStore } from './store/memory-store.ts';
import { createRedisStore } from './store/redis-store.ts';
import { createBridgeServer } from './server.ts';
import { createTokenService, tokenNotFoundHandler, type TokenService, type TokenServiceDeps } from './token/service.ts';
import { allowedAgents } from './config.ts';
import { createAgentDispatchService } from './agents/dispatch-client.ts';

export interface BridgeProcessDeps {
  config: BridgeConfig;
  logger: Logger;
  clock: Clock;
  metrics?: Registry;
  /** Extra registries served on `/metrics` (embedded mode: the SFU's). */
  extraMetrics?: Registry[];
  /** Token-service overrides: federation TLS trust and resolution (tests, private CAs), HTTP. */
  token?: Pick<TokenServiceDeps, 'federation' | 'fetch'>;
}

export interface Bridge {
  readonly appservice?: Appservice;
  start(): Promise<{ url: string; address: AddressInfo }>;
  stop(): Promise<void>;
}

const RETRY_FIRST_MS = 1_000;
const RETRY_MAX_MS = 60_000;

/** An appservice client whose base URL is looked up on each call (cached by the resolver). */
function lazyAppserviceClient(baseUrl: () => Promise<string>, asToken: string): AppserviceClient {
  let current: { url: string; client: AppserviceClient } | undefined;
  const client = async () => {
    const url = await baseUrl();
    if (current?.url !== url) current = { url, client: createAppserviceClient({ baseUrl: url, asToken }) };
    return current.client;
  };
  return {
    ping: async (id, txn) => (await client()).ping(id, txn),
    joinedRooms: async (asUser) => (await client()).joinedRooms(asUser),
    joinedMembers: async (roomId, asUser) => (await client()).joinedMembers(roomId, asUser),
    roomState: async (roomId, asUser) => (await client()).roomState(roomId, asUser),
  };
}

export function createBridge(deps: BridgeProcessDeps): Bridge {
  const { config, logger, clock } = deps;
  const server = createBridgeServer({ config, logger, clock, metrics: deps.metrics, extraMetrics: deps.extraMetrics });
  const redis: RedisClient | undefined = config.redisUrl
    ? createRedisConnection({ url: config.redisUrl, password: config.redisPassword || undefined }, logger.child({ component: 'redis' }))
    : undefined;
  const store = redis ? createRedisStore({ redis }) : createMemoryStore({ clock });

  // One RoomService client for both halves (token service and room lifecycle); with the
  // appservice, rooms outlive their last participant exactly the bridge's deletion grace.
  const roomTimeouts = config.appservice ? roomTimeoutsForGrace(config.room_delete_grace_seconds) : undefined;
  const sfu = createSfuRoomService({ url: config.livekit.url, key: config.livekit.key, secret: config.livekit.secret, roomTimeouts });
  let appservice: Appservice | undefined;
  // The token service owns the client-server API resolver; it is built after the appservice.
  let token: TokenService | undefined;
  const ownHomeserverUrl = (): Promise<string> => (token ? token.ownHomeserverUrl() : Promise.reject(new Error('the token service is not built yet')));
  if (config.appservice) {
    appservice = createAppservice({
      hsToken: config.appservice.hsToken,
      appserviceId: config.appservice.id,
      serverName: config.appservice.serverName,
      store,
      sfu,
      homeserver: lazyAppserviceClient(() => ownHomeserverUrl(), config.appservice.asToken),
      clock,
      logger,
      registry: server.metrics,
      graceSeconds: config.room_delete_grace_seconds,
      leaveGraceSeconds: config.leave_grace_seconds,
      reconcileIntervalSeconds: config.reconcile_interval_seconds,
      txnTtlSeconds: config.txn_id_ttl_seconds,
      ...(allowedAgents(config).length
        ? {
            agents: {
              policy: { allowed: allowedAgents(config), invitePowerLevel: config.agents_invite_power_level },
              dispatches: createAgentDispatchService({ url: config.livekit.url, key: config.livekit.key, secret: config.livekit.secret }),
            },
          }
        : {}),
    });
    server.app.use(APPSERVICE_PREFIX, appservice.router);
  }
  token = createTokenService({
    config,
    logger,
    clock,
    metrics: server.metrics,
    membershipOracle: appservice?.oracle,
    sfu,
    ...deps.token,
    redis,
  });
  server.app.use(token.router);
  server.app.use(tokenNotFoundHandler);

  let retryTimer: TimerHandle | undefined;
  let stopped = false;
  /** Finds the homeserver, then starts the appservice; retries with backoff while it cannot. */
  async function startAppservice(as: Appservice, serverName: string, from: string, delayMs: number): Promise<void> {
    let url: string;
    try {
      url = await ownHomeserverUrl();
    } catch (err) {
      if (stopped) return;
      logger.error(
        { serverName, err: (err as Error).message, retryInMs: delayMs },
        `cannot find the client-server API of the homeserver ${serverName} (from its .well-known/matrix/client); ` +
          `set BRIDGE_HOMESERVER_URL (or homeserver_url) or LIVEKIT_CS_API_URL_OVERRIDES=${serverName}=http://… ; ` +
          'tokens are still issued, the appservice starts once the homeserver is found',
      );
      retryTimer = clock.setTimeout(() => {
        retryTimer = undefined;
        void startAppservice(as, serverName, from, Math.min(delayMs * 2, RETRY_MAX_MS));
      }, delayMs);
      return;
    }
    if (stopped) return;
    logger.info({ serverName, url, from }, 'homeserver client-server API');
    // Reconcile problems are logged and counted inside; they never stop the process.
    await as.start().catch((err: unknown) => logger.error({ err: (err as Error).message }, 'appservice start failed'));
  }

  return {
    appservice,
    async start() {
      await token.start();
      const bound = await server.start();
      if (appservice && config.appservice) {
        await startAppservice(appservice, config.appservice.serverName, config.appservice.homeserverUrlFrom, RETRY_FIRST_MS);
      }
      return bound;
    },
    async stop() {
      stopped = true;
      clock.clearTimeout(retryTimer);
      appservice?.stop();
      await server.stop();
      await token.close();
      await store.close();
    },
  };
}
