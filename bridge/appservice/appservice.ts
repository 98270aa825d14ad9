/**
 * Assembles the appservice half of the bridge from its parts: the HTTP router (mounted by the
 * caller at `APPSERVICE_PREFIX`), the membership tracker, the SFU room lifecycle, reconcile and
 * the membership oracle for the token service. Lifecycle: `createAppservice(deps)`; mount
 * `router`; start the HTTP listener; then `start()` (re-arms timers, pings the homeserver so a
 * backlog flushes at once, runs the first reconcile and schedules the next); `stop()` clears
 * every timer (it does not close the store, which the caller owns).
 */
import type { Router } from 'express';
import type { Registry } from 'prom-client';
import type { Clock } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import { createRoomLifecycle, type RoomLifecycle } from '../lifecycle/lifecycle.ts';
import { createReconciler, type ReconcileReport, type Reconciler } from '../lifecycle/reconcile.ts';
import type { SfuRoomService } from '../sfu/room-service.ts';
import { createMembershipOracle, type MembershipOracle } from '../membership/oracle.ts';
import { createMembershipTracker, type MembershipTracker } from '../membership/tracker.ts';
import type { BridgeStore } from '../store/store.ts';
import { createAppserviceRouter } from './api.ts';
import type { AppserviceClient } from '../homeserver/client.ts';
import { createBridgeMetrics, type BridgeMetrics } from './metrics.ts';
import { createAgentInvites, withAgents, type AgentInvitesDeps } from '../agents/invites.ts';

export { APPSERVICE_PREFIX } from './api.ts';

export interface AppserviceDeps {
  hsToken: string;
  /** Registration `id`, for the start-up ping; no ping without it. */
  appserviceId?: string;
  serverName: string;
  store: BridgeStore;
  sfu: SfuRoomService;
  homeserver: AppserviceClient;
  clock: Clock;
  logger: Logger;
  registry: Registry;
  graceSeconds: number;
  /** Seconds a plain `{}` call leave waits for the member's membership to come back. */
  leaveGraceSeconds: number;
  reconcileIntervalSeconds: number;
  txnTtlSeconds: number;
  /** Agents members may invite into calls (bridge/agents); absent = off. */
  agents?: Pick<AgentInvitesDeps, 'policy' | 'dispatches'>;
}

export interface Appservice {
  readonly router: Router;
  readonly tracker: MembershipTracker;
  readonly lifecycle: RoomLifecycle;
  readonly reconciler: Reconciler;
  readonly oracle: MembershipOracle;
  readonly metrics: BridgeMetrics;
  start(): Promise<ReconcileReport>;
  stop(): void;
}

export function createAppservice(deps: AppserviceDeps): Appservice {
  const logger = deps.logger.child({ component: 'appservice' });
  const metrics = createBridgeMetrics(deps.registry, deps.store);
  const tracker = createMembershipTracker({
    store: deps.store,
    clock: deps.clock,
    logger,
    metrics,
    leaveGraceMs: deps.leaveGraceSeconds * 1000,
    rememberLeavesMs: deps.txnTtlSeconds * 1000,
  });
  const lifecycle = createRoomLifecycle({
    store: deps.store,
    sfu: deps.sfu,
    clock: deps.clock,
    logger: logger.child({ component: 'lifecycle' }),
    metrics,
    graceSeconds: deps.graceSeconds,
    inRoom: (roomId, fn) => tracker.inRoom(roomId, fn),
  });
  const agents = deps.agents
    ? createAgentInvites({
        ...deps.agents,
        store: deps.store,
        homeserver: deps.homeserver,
        serverName: deps.serverName,
        inRoom: (r, fn) => tracker.inRoom(r, fn),
        logger,
      })
    : undefined;
  tracker.setListener(withAgents(lifecycle, agents));
  const reconciler = createReconciler({
    store: deps.store,
    tracker,
    lifecycle,
    sfu: deps.sfu,
    homeserver: deps.homeserver,
    clock: deps.clock,
    logger,
    metrics,
    serverName: deps.serverName,
    graceSeconds: deps.graceSeconds,
    intervalSeconds: deps.reconcileIntervalSeconds,
  });
  const router = createAppserviceRouter({
    hsToken: deps.hsToken,
    store: deps.store,
    logger,
    metrics,
    applyEvents: async (events) => {
      await tracker.applyEvents(events);
      await agents?.applyEvents(events);
    },
    txnTtlMs: deps.txnTtlSeconds * 1000,
    onPing: (id) => logger.debug({ transactionId: id }, 'pinged by the homeserver'),
  });
  return {
    router,
    tracker,
    lifecycle,
    reconciler,
    oracle: createMembershipOracle({ store: deps.store }),
    metrics,
    async start() {
      await tracker.start();
      await lifecycle.start();
      if (deps.appserviceId) {
        try {
          const r = await deps.homeserver.ping(deps.appserviceId, `start-${deps.clock.now()}`);
          logger.info({ durationMs: r.durationMs }, 'homeserver reached us through the appservice ping');
        } catch (err) {
          logger.warn({ err: (err as Error).message }, 'appservice ping to the homeserver failed; check the registration url and tokens');
        }
      } else {
        logger.warn('no appservice id configured (registration `id`); skipping the start-up ping');
      }
      return await reconciler.start();
    },
    stop() {
      reconciler.stop();
      lifecycle.stop();
      tracker.stop();
    },
  };
}
