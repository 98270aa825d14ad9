/**
 * The token service: builds every part from the bridge config and returns an express router to
 * mount on the bridge's listener, plus start/close for the delayed-leave jobs. Routes:
 * `/sfu/get`, `/get_token`, `/delegate_delayed_leave` (lk-jwt-service, OpenID), `/sfu_webhook`
 * (LiveKit webhooks, always 200), and with an appservice registration the MSC4195 paths under
 * `/_matrix/client/unstable/io.element.msc4195/rtc/livekit/` and the federation twin.
 * `tokenNotFoundHandler` answers Go's `404 page not found`; mount it after every other route.
 *
 * Lifecycle: `createTokenService(deps)` → mount `router` → `start()` (restores stored jobs) →
 * `close()` (stops job timers, keeps jobs stored for the next start, closes its own Redis).
 */
import express, { type Request, type RequestHandler, type Router } from 'express';
import { Counter, Gauge, type Registry } from 'prom-client';
import { WebhookReceiver } from 'livekit-server-sdk';
import { DisconnectReason } from '@livekit/protocol';
import type { Clock } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import { createRedisConnection, type RedisClient } from '../../common/redis.ts';
import type { BridgeConfig } from '../config.ts';
import type { PublishPolicy, TokenContext, TokenSfuApi } from './context.ts';
import { createDelayedLeaveManager, type DelayedLeaveManager } from './delayed-leave.ts';
import { sendGoNotFound } from './errors.ts';
import { createFederationClient, federationOptionsOf, type FederationClientDeps } from './federation.ts';
import { createHomeserverClient, type Fetch } from '../homeserver/client.ts';
import { createCsApiResolver } from './cs-api-resolver.ts';
import { createMemoryJobStore, createRedisJobStore, type DelayedLeaveJobStore } from './job-store.ts';
import { createTokenMinter } from './jwt.ts';
import { handleDelegateDelayedLeave, handleGetToken, handleSfuGet, legacyEndpoint } from './legacy.ts';
import { createMembershipChecker, type RoomMembershipOracle } from './membership.ts';
import { CS_PREFIX, handleCsDelegateDelayedLeave, handleCsGetToken, handleSsGetToken, proxiedEndpoint, SS_GET_TOKEN_PATH } from './proxied.ts';
import { createSfuRoomService } from '../sfu/room-service.ts';

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
  federation?: Pick<FederationClientDeps, 'tlsCa' | 'resolveSrv' | 'wellKnownPort' | 'connectTimeoutMs' | 'requestTimeoutMs'>;
  /** SFU RoomService; default livekit-server-sdk's RoomServiceClient on `config.livekit.url`. */
  sfu?: TokenSfuApi;
  /** Default: `config.publish_policy` when present, else 'everyone' (lk-jwt-service Go HEAD). */
  publishPolicy?: PublishPolicy;
  random?: () => number;
}

export interface TokenService {
  readonly router: Router;
  readonly delayedLeave: DelayedLeaveManager;
  start(): Promise<void>;
  close(): Promise<void>;
}

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
  if (config.appservice && config.homeserver_url && !overrides[config.appservice.serverName]) {
    overrides[config.appservice.serverName] = config.homeserver_url.replace(/\/+$/, '');
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
  let store: DelayedLeaveJobStore;
  if (deps.redis) store = createRedisJobStore({ redis: deps.redis, logger });
  else if (config.redisUrl) {
    ownRedis = createRedisConnection({ url: config.redisUrl, password: config.redisPassword || undefined }, logger);
    store = createRedisJobStore({ redis: ownRedis, logger });
  } else store = createMemoryJobStore();

  const jobs = new Gauge({ name: 'matrixrtc_delayed_leave_jobs', help: 'Delegated delayed-leave jobs in progress', registers: [deps.metrics] });
  const delayedLeave = createDelayedLeaveManager({
    clock,
    logger,
    store,
    sfu,
    homeserver,
    csApi,
    asToken: config.appservice?.asToken,
    appserviceServerName: config.appservice?.serverName,
    sanityCheckIntervalMs: config.sanityCheckIntervalSeconds * 1000,
    random: deps.random,
    onStateChange: () => jobs.set(delayedLeave.size()),
  });

  const membership = createMembershipChecker({
    enabled: config.membership_check,
    logger,
    oracle: deps.membershipOracle,
    homeserver,
    csApi,
    appservice: config.appservice,
    homeserverUrl: config.homeserver_url || undefined,
  });

  const ctx: TokenContext = {
    clock,
    logger,
    livekitUrl: config.livekit.url,
    fullAccessHomeservers: config.fullAccessHomeservers,
    publishPolicy: deps.publishPolicy ?? config.publish_policy ?? 'everyone',
    federation,
    csApi,
    homeserver,
    minter: createTokenMinter({ clock, apiKey: config.livekit.key, apiSecret: config.livekit.secret }),
    sfu,
    membership,
    delayedLeave,
    appservice: config.appservice,
    homeserverUrl: config.homeserver_url || undefined,
    countRequest: (endpoint, status) => requests.inc({ endpoint, status: String(status) }),
  };

  const router = express.Router();
  const bind = (fn: (c: TokenContext, r: Request) => Promise<unknown>) => (req: Request) => fn(ctx, req);
  router.all('/sfu/get', legacyEndpoint(ctx, 'sfu_get', bind(handleSfuGet)));
  router.all('/get_token', legacyEndpoint(ctx, 'get_token', bind(handleGetToken)));
  router.all('/delegate_delayed_leave', legacyEndpoint(ctx, 'delegate_delayed_leave', bind(handleDelegateDelayedLeave)));

  const receiver = new WebhookReceiver(config.livekit.key, config.livekit.secret);
  const handleWebhook = async (req: Request, res: express.Response) => {
    try {
      const chunks: Buffer[] = [];
      for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
      const event = await receiver.receive(Buffer.concat(chunks).toString('utf8'), req.get('authorization'));
      const room = event.room?.name;
      const p = event.participant;
      if (room && p?.identity) {
        if (event.event === 'participant_joined') delayedLeave.onSfuEvent(room, p.identity, 'joined', false);
        else if (event.event === 'participant_left' || event.event === 'participant_connection_aborted') {
          const intentional = p.disconnectReason === DisconnectReason.CLIENT_INITIATED;
          delayedLeave.onSfuEvent(room, p.identity, event.event === 'participant_left' ? 'left' : 'aborted', intentional);
        }
      }
    } catch (err) {
      logger.warn({ err: (err as Error).message }, 'SFU webhook rejected');
    }
    res.status(200).end();
  };
  router.all('/sfu_webhook', (req, res) => {
    void handleWebhook(req, res);
  });

  if (config.appservice) {
    router.all(`${CS_PREFIX}/get_token`, proxiedEndpoint(ctx, 'cs_get_token', true, bind(handleCsGetToken)));
    router.all(`${CS_PREFIX}/delegate_delayed_leave`, proxiedEndpoint(ctx, 'cs_delegate_delayed_leave', true, bind(handleCsDelegateDelayedLeave)));
    router.all(SS_GET_TOKEN_PATH, proxiedEndpoint(ctx, 'ss_get_token', false, bind(handleSsGetToken)));
  }

  return {
    router,
    delayedLeave,
    async start() {
      try {
        await delayedLeave.restore();
      } catch (err) {
        logger.error({ err: (err as Error).message }, 'could not restore delayed-leave jobs; continuing without them');
      }
    },
    async close() {
      await delayedLeave.close();
      await store.close();
      federation.close();
      if (ownRedis) ownRedis.disconnect();
    },
  };
}
