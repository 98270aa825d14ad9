/**
 * Chooses and wires the routing of one SFU node, once at start-up: without `redis` a local
 * router (one node, as before); with it the Redis router, the signalling relay, the cluster-wide
 * RoomService backend and the node's figures for the registry. The edges get three things from
 * here: `route` for each signalling upgrade, `backend` for the public RoomService, and
 * `drain`/`start`/`stop` for the process lifecycle.
 *
 * Lifecycle: `createCluster(deps)`; `start(selfUrl)` after the HTTP listener is bound;
 * `drain(waitMs)` on SIGTERM; `stop()` before the room manager closes.
 */
import { cpus, loadavg } from 'node:os';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { WebSocketServer } from 'ws';
import type { Registry } from 'prom-client';
import type { Clock } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import { createRedisConnection, isRedisConfigured, type RedisClient } from '../../common/redis.ts';
import type { SfuConfig } from '../config.ts';
import type { RoomServiceBackend } from '../room-service-api.ts';
import type { RoomManager } from '../rtc/room-manager.ts';
import type { RouteOutcome } from '../signal/signalling.ts';
import { createClusterBackend } from './cluster-backend.ts';
import { createLocalRouter } from './local-router.ts';
import { createClusterMetrics } from './metrics.ts';
import { createRedisRouter } from './redis-router.ts';
import { createRelayManager, isRelayedRequest, type RelayManager } from './relay.ts';
import { NoNodeAvailableError } from './selector.ts';
import type { NodeInfo, NodeStats, Router } from './types.ts';

export interface ClusterDeps {
  config: SfuConfig;
  logger: Logger;
  clock: Clock;
  rooms: RoomManager;
  registry: Registry;
  nodeId: string;
  /** This node's load figures. */
  load: { cpuLoad(): number; bytesPerSec(): number; packetsPerSec(): number };
  /** A Redis client to use instead of one made from config.redis (tests). */
  redis?: RedisClient;
}


export interface Cluster {
  readonly router: Router;
  /** The RoomService backend for the public `/twirp` (cluster-wide when clustered). */
  readonly backend: RoomServiceBackend;
  /** Set when clustered: route one authenticated upgrade for `room`. */
  readonly route?: (room: string, req: IncomingMessage, socket: Duplex, head: Buffer, wss: WebSocketServer) => Promise<RouteOutcome>;
  /** Set when clustered: the hosting node's answer to `/rtc/validate` for a room hosted elsewhere. */
  readonly validateElsewhere?: (room: string, pathAndQuery: string, authorization: string | undefined) => Promise<{ status: number; body: string } | undefined>;
  /** True when `req` came from another node's relay (serve it here, count it per client). */
  isRelayed(req: IncomingMessage): boolean;
  start(selfUrl: string): Promise<void>;
  /** No new rooms, participants and relayed sessions asked to reconnect elsewhere, then wait (bounded) until none is left. */
  drain(waitMs: number): Promise<void>;
  stop(): Promise<void>;
}

/** How many times a join tries another placement after the chosen host refused TCP. */
const ROUTE_ATTEMPTS = 3;
const DRAIN_POLL_MS = 100;

/** The URL other nodes reach this one on: cluster.signal_url, else rtc.node_ip (or the bind address) and the bound port. */
export function signalUrlOf(config: SfuConfig, boundPort: number): string {
  if (config.cluster.signal_url) return config.cluster.signal_url.replace(/\/+$/, '');
  const bind = config.bind_addresses[0];
  const host = config.rtc.node_ip || (bind && bind !== '0.0.0.0' && bind !== '::' ? bind : '127.0.0.1');
  return `http://${host.includes(':') ? `[${host}]` : host}:${boundPort}`;
}

export function createCluster(deps: ClusterDeps): Cluster {
  const { config, rooms, clock } = deps;
  const log = deps.logger.child({ component: 'cluster' });
  const numCpus = Math.max(1, cpus().length);
  const stats = (): NodeStats => ({
    cpuLoad: deps.load.cpuLoad() / numCpus,
    sysload: loadavg()[0]! / numCpus,
    numCpus,
    bytesPerSec: deps.load.bytesPerSec(),
    packetsPerSec: deps.load.packetsPerSec(),
    ...rooms.counts(),
  });

  if (!isRedisConfigured(redisSettings(config))) {
    const selfInfo = (): NodeInfo => ({
      id: deps.nodeId,
      region: config.region,
      state: 'serving',
      signalUrl: '',
      nodeIp: config.rtc.node_ip,
      portRange: [config.rtc.port_range_start, config.rtc.port_range_end],
      startedAt: 0,
      updatedAt: clock.now(),
      stats: stats(),
    });
    const router = createLocalRouter(deps.nodeId, selfInfo);
    return {
      router,
      backend: rooms,
      isRelayed: () => false,
      start: async () => undefined,
      drain: async () => undefined,
      stop: async () => undefined,
    };
  }

  const metrics = createClusterMetrics(deps.registry);
  const ownRedis = deps.redis === undefined;
  const redis = deps.redis ?? createRedisConnection(redisSettings(config), log.child({ component: 'redis' }));
  let relays: RelayManager | undefined;
  const router = createRedisRouter({
    config,
    redis,
    clock,
    logger: deps.logger,
    metrics,
    nodeId: deps.nodeId,
    stats,
    localRooms: () => rooms.roomNames(),
    moveRoom: (room) => rooms.moveParticipants(room),
    onNodeDead: (id) => relays?.endTo(id),
  });
  relays = createRelayManager({ keys: config.keys, logger: deps.logger, clock, metrics, maxPayload: config.limit.signal_message_size_limit });
  const relayManager = relays;
  const detach = rooms.onEvent((e) => {
    if (e.type === 'room_finished') router.roomClosed(e.room.name);
  });

  async function route(room: string, req: IncomingMessage, socket: Duplex, head: Buffer, wss: WebSocketServer): Promise<RouteOutcome> {
    // A relayed connection is served here, whatever the map says: never a second hop.
    if (isRelayedRequest(config.keys, req)) return { kind: 'local' };
    for (let attempt = 0; attempt < ROUTE_ATTEMPTS; attempt++) {
      let placement;
      try {
        placement = await router.placeRoom(room, config.room.auto_create);
      } catch (err) {
        if (err instanceof NoNodeAvailableError) return { kind: 'refused', status: 503, message: err.message };
        throw err;
      }
      // Not placed and not auto-created: the local room manager refuses it with LiveKit's 404.
      if (!placement || placement.kind === 'local') return { kind: 'local' };
      const outcome = await relayManager.relay(placement.node, req, socket, head, wss);
      if (outcome !== 'unreachable') return { kind: 'handled' };
      log.warn({ room, host: placement.node.id }, 'hosting node refuses connections: declaring it dead and placing the room again');
      await router.reportUnreachable(placement.node.id);
    }
    return { kind: 'refused', status: 503, message: 'no node could take this room' };
  }

  return {
    router,
    backend: createClusterBackend({ local: rooms, router, keys: config.keys, logger: deps.logger }),
    route,
    async validateElsewhere(room, pathAndQuery, authorization) {
      const placement = await router.placeRoom(room, false);
      if (placement?.kind !== 'remote') return undefined;
      try {
        const res = await fetch(`${placement.node.signalUrl}${pathAndQuery}`, {
          ...(authorization ? { headers: { authorization } } : {}),
          signal: AbortSignal.timeout(3000),
        });
        return { status: res.status, body: await res.text() };
      } catch {
        return { status: 503, body: 'the node hosting this room did not answer' };
      }
    },
    isRelayed: (req) => isRelayedRequest(config.keys, req),
    start: (selfUrl) => router.start(selfUrl),
    async drain(waitMs) {
      await router.drain();
      const moved = rooms.moveParticipants();
      const relayed = relayManager.size;
      relayManager.endAll();
      log.info({ moved, relayed, waitMs }, 'draining: participants asked to reconnect through another node');
      const deadline = clock.now() + waitMs;
      while (clock.now() < deadline && rooms.counts().participants > 0) {
        await new Promise<void>((resolve) => clock.setTimeout(resolve, DRAIN_POLL_MS));
      }
      const left = rooms.counts().participants;
      if (left > 0) log.warn({ left }, 'drain time over: closing the participants still here');
    },
    async stop() {
      detach();
      relayManager.close();
      await router.stop();
      if (ownRedis) redis.disconnect();
    },
  };
}

function redisSettings(config: SfuConfig) {
  const r = config.redis;
  return {
    address: r.address,
    username: r.username,
    password: r.password,
    db: r.db,
    useTls: r.use_tls,
    sentinelMasterName: r.sentinel_master_name,
    sentinelAddresses: r.sentinel_addresses,
    sentinelUsername: r.sentinel_username,
    sentinelPassword: r.sentinel_password,
    clusterAddresses: r.cluster_addresses,
    failFastMs: 1000,
  };
}
