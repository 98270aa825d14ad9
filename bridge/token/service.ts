/**
 * The token service: builds every part from the bridge config and returns an express router to
 * mount on the bridge's listener, plus start/close for the delayed-leave jobs. Routes:
 * `/sfu/get`, `/get_token`, `/delegate_delayed_leave` (lk-jwt-service, OpenID), `/sfu_webhook`
 * (LiveKit webhooks, sfu-webhook.ts), and with an appservice registration the MSC4195 paths under
 * `/_matrix/client/unstable/io.element.msc4195/rtc/livekit/` and the federation twin.
 * `tokenNotFoundHandler` answers Go's `404 page not found`; mount it after every other route.
 *
 * Lifecycle: `createTokenService(deps)` → mount `router` → `start()` (restores stored jobs, starts
 * the membership monitor) → `close()` (stops job timers and the monitor, keeps jobs and watched
 * participants stored for the next start, closes its own Redis).
 */
import express, { type Request, type RequestHandler, type Router } from 'express';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Clock } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import { createRedisConnection, type RedisClient } from '../../common/redis.ts';
import type { BridgeConfig } from '../config.ts';
import { ownCsApi, type PublishPolicy, type TokenContext, type TokenSfuApi } from './context.ts';
import { createDelayedLeaveManager, type DelayedLeaveManager } from './delayed-leave.ts';
import { sendGoNotFound } from './errors.ts';
import { createFederationClient, federationOptionsOf, type FederationClientDeps } from './federation.ts';
import { createHomeserverClient, type Fetch } from '../homeserver/client.ts';
import { createCsApiResolver } from './cs-api-resolver.ts';
import { createMemoryJobStore, createRedisJobStore, type DelayedLeaveJobStore } from './job-store.ts';
import { createTokenMinter } from './jwt.ts';
import { handleDelegateDelayedLeave, handleGetToken, handleSfuGet, legacyEndpoint } from './legacy.ts';
import { createMembershipChecker, type RoomMembershipOracle } from './membership.ts';
import { createMembershipMonitor, type MembershipMonitor } from './membership-monitor.ts';
import { createMemoryMonitorStore, createRedisMonitorStore, type MonitorStore } from './membership-monitor-store.ts';
import { createOpenIdVerifier } from './openid.ts';
import { CS_PREFIX, handleCsDelegateDelayedLeave, handleCsGetToken, handleSsGetToken, proxiedEndpoint, SS_GET_TOKEN_PATH } from './proxied.ts';
import { createSfuRoomService, type SfuRoomService } from '../sfu/room-service.ts';
import { createSfuWebhookHandler } from './sfu-webhook.ts';

export type { RoomMembershipOracle } from './membership.ts';

export interface TokenServiceDeps {
  config: BridgeConfig;
  logger: Logger;
  clock: Clock;
  metrics: Registry;
  /** The appservice's tracked membership; unknown answers fall back to the homeserver. */
  membershipOracle?: RoomMembershipOracle;
  /** Redis connection for the job store; by default one is made from `config.redisUrl` (if set). */
  redis?: RedisClient;
  /** HTTP for client-server API calls (default global fetch). */
  fetch?: Fetch;
  /** Federation-client overrides (test CA, SRV resolver, well-known port). */
  federation?: Pick<FederationClientDeps, 'tlsCa' | 'resolveSrv' | 'wellKnownPort' | 'connectTimeoutMs' | 'requestTimeoutMs' | 'allowPrivateAddresses'>;
  /** SFU RoomService; default livekit-server-sdk's RoomServiceClient on `config.livekit.url`. */
  sfu?: TokenSfuApi & Partial<Pick<SfuRoomService, 'listParticipants' | 'removeParticipant' | 'revokePermissions' | 'deleteRoom'>>;
  /** Delayed-leave job ownership: this replica's lease name and the lease length. */
  replicaId?: string;
  leaseMs?: number;
  /** Default: `config.publish_policy` when present, else 'everyone' (lk-jwt-service Go HEAD). */
  publishPolicy?: PublishPolicy;
  random?: () => number;
}

export interface TokenService {
  readonly router: Router;
  readonly delayedLeave: DelayedLeaveManager;
  /** The membership monitor when it runs (appservice mode, membership check on, interval > 0). */
  readonly monitor: MembershipMonitor | undefined;
  /**
   * The appservice's homeserver's client-server URL (config.ts's `appservice.homeserverUrl`,
   * else its `.well-known/matrix/client`, cached 4 h); throws CsApiUnresolvableError, or Error
   * without an appservice registration.
   */
  ownHomeserverUrl(): Promise<string>;
  start(): Promise<void>;
  close(): Promise<void>;
}

/** Stands in for a RoomService call a caller's SFU API lacks. */
const missingSfuCall = (what: string) => () => Promise.reject(new Error(`the SFU API given has no ${what}`));

/** Go's mux answer for unknown paths; mount last on the app. */
export const tokenNotFoundHandler: RequestHandler = (_req, res) => sendGoNotFound(res);

export function createTokenService(deps: TokenServiceDeps): TokenService {
  const { config, clock } = deps;
  const logger = deps.logger.child({ component: 'token' });
  const requests = new Counter({
    name: 'matrixrtc_token_requests_total',
    help: 'Token service requests answered, by endpoint and HTTP status',
    labelNames: ['endpoint', 'status'],
    registers: [deps.metrics],
  });

  const overrides = { ...config.csApiUrlOverrides };
  if (config.appservice?.homeserverUrl && !overrides[config.appservice.serverName]) {
    overrides[config.appservice.serverName] = config.appservice.homeserverUrl;
  }
  const federation = createFederationClient({
    clock,
    logger,
    insecureSkipVerifyTls: config.insecureSkipVerifyTls,
    ...federationOptionsOf(config),
    ...deps.federation,
  });
  const csApi = createCsApiResolver({ clock, logger, federation, overrides });
  const homeserver = createHomeserverClient({ fetch: deps.fetch });
  const sfu = deps.sfu ?? createSfuRoomService({ url: config.livekit.url, key: config.livekit.key, secret: config.livekit.secret });

  let ownRedis: RedisClient | undefined;
  if (!deps.redis && config.redisUrl) ownRedis = createRedisConnection({ url: config.redisUrl, password: config.redisPassword || undefined }, logger);
  const redis = deps.redis ?? ownRedis;
  const store: DelayedLeaveJobStore = redis ? createRedisJobStore({ redis, logger }) : createMemoryJobStore(clock);

  const jobs = new Gauge({ name: 'matrixrtc_delayed_leave_jobs', help: 'Delegated delayed-leave jobs in progress', registers: [deps.metrics] });
  const delayedLeave = createDelayedLeaveManager({
    clock,
    logger,
    store,
    homeserver,
    csApi,
    // A caller's SFU API without ListParticipants only loses the room poll (GetParticipant still works).
    sfu: {
      participantExists: (room, identity) => sfu.participantExists(room, identity),
      listParticipants: (room) => (sfu.listParticipants ? sfu.listParticipants(room) : Promise.reject(new Error('the SFU API given has no ListParticipants'))),
    },
    asToken: config.appservice?.asToken,
    appserviceServerName: config.appservice?.serverName,
    sanityCheckIntervalMs: config.sanityCheckIntervalSeconds * 1000,
    replicaId: deps.replicaId,
    leaseMs: deps.leaseMs,
    random: deps.random,
    onStateChange: () => jobs.set(delayedLeave.size()),
  });

  const membership = createMembershipChecker({
    enabled: config.membershipCheck,
    logger,
    oracle: deps.membershipOracle,
    homeserver,
    csApi,
    appservice: config.appservice,
    homeserverUrl: config.appservice?.homeserverUrl,
  });
  if (config.membershipCheck) {
    logger.info(
      { serverName: config.appservice?.serverName },
      'membership check on: tokens only for users joined to the Matrix room, asked of the homeserver with the appservice registration',
    );
  } else if (config.membership_check === false) {
    logger.info('membership check off (membership_check: false): any user with a valid OpenID token gets a token');
  } else {
    logger.info(
      'membership check off: no appservice registration, so tokens go to any user with a valid OpenID token, as lk-jwt-service does ' +
        '(set LIVEKIT_AS_REGISTRATION_FILE and LIVEKIT_HS_SERVER_NAME to check room membership)',
    );
  }
  const monitor = buildMonitor();
  const ownServer = config.appservice?.serverName;
  const openId = createOpenIdVerifier({
    logger,
    federation,
    fetch: deps.fetch,
    // Our own homeserver at its known URL; any server the operator gave a client-server URL for, there.
    knownClientServerUrl: async (serverName) =>
      serverName === ownServer ? ownCsApi(ctx, serverName) : config.csApiUrlOverrides[serverName],
  });

  const ctx: TokenContext = {
    clock,
    logger,
    livekitUrl: config.livekit.url,
    fullAccessHomeservers: config.fullAccessHomeservers,
    publishPolicy: deps.publishPolicy ?? config.publish_policy ?? 'everyone',
    federation,
    openId,
    csApi,
    homeserver,
    minter: createTokenMinter({ clock, apiKey: config.livekit.key, apiSecret: config.livekit.secret }),
    sfu,
    membership,
    delayedLeave,
    monitor,
    appservice: config.appservice,
    homeserverUrl: config.appservice?.homeserverUrl,
    countRequest: (endpoint, status) => requests.inc({ endpoint, status: String(status) }),
  };

  const router = express.Router();
  const bind = (fn: (c: TokenContext, r: Request) => Promise<unknown>) => (req: Request) => fn(ctx, req);
  router.all('/sfu/get', legacyEndpoint(ctx, 'sfu_get', bind(handleSfuGet)));
  router.all('/get_token', legacyEndpoint(ctx, 'get_token', bind(handleGetToken)));
  router.all('/delegate_delayed_leave', legacyEndpoint(ctx, 'delegate_delayed_leave', bind(handleDelegateDelayedLeave)));

  router.all(
    '/sfu_webhook',
    createSfuWebhookHandler({
      apiKey: config.livekit.key,
      apiSecret: config.livekit.secret,
      clock,
      logger,
      metrics: deps.metrics,
      onEvent: (room, identity, event, clientInitiated) => {
        delayedLeave.onSfuEvent(room, identity, event, clientInitiated);
        void monitor?.onSfuEvent(room, identity, event);
      },
      onRoomFinished: (room) => void monitor?.onRoomFinished(room),
    }),
  );

  if (config.appservice) {
    router.all(`${CS_PREFIX}/get_token`, proxiedEndpoint(ctx, 'cs_get_token', true, bind(handleCsGetToken)));
    router.all(`${CS_PREFIX}/delegate_delayed_leave`, proxiedEndpoint(ctx, 'cs_delegate_delayed_leave', true, bind(handleCsDelegateDelayedLeave)));
    router.all(SS_GET_TOKEN_PATH, proxiedEndpoint(ctx, 'ss_get_token', false, bind(handleSsGetToken)));
  }

  /**
   * The membership monitor (membership-monitor.ts) runs with an appservice registration, the
   * membership check on and LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS > 0; it says once why not.
   * Without a registration an explicit interval is a warning, not a refusal: lk-jwt-service takes
   * the variable in any mode and only runs its monitor in appservice mode, so a deployment (or a
   * chart that spells out the default) switching images must still start.
   */
  function buildMonitor(): MembershipMonitor | undefined {
    const seconds = config.membershipCheckIntervalSeconds;
    if (seconds <= 0) {
      logger.info('membership monitor off (LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS=0): a user who leaves the Matrix room stays on the SFU unless the appservice sees the leave');
      return undefined;
    }
    const as = config.appservice;
    if (!as) {
      const text =
        'membership monitor off: it asks the homeserver who is in a room with the appservice`s as_token, and there is no appservice registration ' +
        '(set LIVEKIT_AS_REGISTRATION_FILE and LIVEKIT_HS_SERVER_NAME to run it; LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS is not used until then)';
      if (config.membershipCheckIntervalSet) logger.warn({ intervalSeconds: seconds }, text);
      else logger.info(text);
      return undefined;
    }
    if (!config.membershipCheck) {
      logger.info('membership monitor off (membership_check: false): tokens are not tied to room membership, so nobody is removed for leaving the room');
      return undefined;
    }
    const monitorStore: MonitorStore = redis ? createRedisMonitorStore({ redis, logger }) : createMemoryMonitorStore(clock);
    logger.info({ intervalSeconds: seconds }, 'membership monitor on: participants whose user left the Matrix room are removed from the SFU within one interval');
    return createMembershipMonitor({
      clock,
      logger,
      metrics: deps.metrics,
      store: monitorStore,
      sfu: {
        listParticipants: sfu.listParticipants ? (r) => sfu.listParticipants!(r) : missingSfuCall('ListParticipants'),
        removeParticipant: sfu.removeParticipant ? (r, i, o) => sfu.removeParticipant!(r, i, o) : missingSfuCall('RemoveParticipant'),
        revokePermissions: sfu.revokePermissions ? (r, i) => sfu.revokePermissions!(r, i) : missingSfuCall('UpdateParticipant'),
        deleteRoom: sfu.deleteRoom ? (r) => sfu.deleteRoom!(r) : missingSfuCall('DeleteRoom'),
      },
      homeserver,
      ownCsApi: () => ownCsApi(ctx, as.serverName),
      asToken: as.asToken,
      serverName: as.serverName,
      intervalMs: seconds * 1000,
      stopDelayedLeave: (room, identity) => delayedLeave.stop(room, identity),
      replicaId: deps.replicaId,
      random: deps.random,
    });
  }

  return {
    router,
    delayedLeave,
    monitor,
    async ownHomeserverUrl() {
      if (!ownServer) throw new Error('no appservice registration: the bridge has no homeserver of its own');
      return ownCsApi(ctx, ownServer);
    },
    async start() {
      try {
        await delayedLeave.restore();
      } catch (err) {
        logger.error({ err: (err as Error).message }, 'could not restore delayed-leave jobs; continuing without them');
      }
      monitor?.start();
    },
    async close() {
      await monitor?.close();
      await delayedLeave.close();
      await store.close();
      federation.close();
      if (ownRedis) ownRedis.disconnect();
    },
  };
}
