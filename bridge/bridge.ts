/**
 * The whole bridge process, assembled: one HTTP listener carrying the token service
 * (lk-jwt-service routes and, with an appservice registration, the MSC4195 proxied routes) and,
 * when the appservice is configured, the appservice API with membership tracking, SFU room
 * lifecycle and reconcile. State lives in Redis when `LIVEKIT_REDIS_URL` is set (shared by
 * replicas), in memory otherwise. Built by `createBridge(deps)`; `start()` binds the listener
 * before the appservice pings the homeserver (the ping calls us back); `stop()` undoes it all.
 */
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Clock } from '../common/clock.ts';
import { ConfigError } from '../common/config.ts';
import type { Logger } from '../common/logger.ts';
import { createRedisConnection, type RedisClient } from '../common/redis.ts';
import { APPSERVICE_PREFIX, createAppservice, type Appservice } from './appservice/appservice.ts';
import { createAppserviceClient } from './homeserver/client.ts';
import type { BridgeConfig } from './config.ts';
import { createSfuRoomService, roomTimeoutsForGrace } from './sfu/room-service.ts';
import { createMemoryStore } from './store/memory-store.ts';
import { createRedisStore } from './store/redis-store.ts';
import { createBridgeServer } from './server.ts';
import { createTokenService, tokenNotFoundHandler, type TokenServiceDeps } from './token/service.ts';

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

export function createBridge(deps: BridgeProcessDeps): Bridge {
  const { config, logger, clock } = deps;
  if (config.appservice && !config.homeserver_url) {
    throw new ConfigError([
      'homeserver_url: required in appservice mode (set it in the bridge YAML or BRIDGE_HOMESERVER_URL), so the bridge can read room state and ping the homeserver',
    ]);
  }
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
  if (config.appservice) {
    appservice = createAppservice({
      hsToken: config.appservice.hsToken,
      appserviceId: config.appservice.id,
      serverName: config.appservice.serverName,
      store,
      sfu,
      homeserver: createAppserviceClient({ baseUrl: config.homeserver_url, asToken: config.appservice.asToken }),
      clock,
      logger,
      registry: server.metrics,
      graceSeconds: config.room_delete_grace_seconds,
      leaveGraceSeconds: config.leave_grace_seconds,
      reconcileIntervalSeconds: config.reconcile_interval_seconds,
      txnTtlSeconds: config.txn_id_ttl_seconds,
    });
    server.app.use(APPSERVICE_PREFIX, appservice.router);
  }
  const token = createTokenService({
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

  return {
    appservice,
    async start() {
      await token.start();
      const bound = await server.start();
      if (appservice) {
        // Reconcile problems are logged and counted inside; they never stop the process.
        await appservice.start().catch((err: unknown) => logger.error({ err: (err as Error).message }, 'appservice start failed'));
      }
      return bound;
    },
    async stop() {
      appservice?.stop();
      await server.stop();
      await token.close();
      await store.close();
    },
  };
}
