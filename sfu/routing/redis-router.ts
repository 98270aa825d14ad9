/**
 * The Redis router: a node registry with a heartbeat and the room → node map (after
 * livekit/livekit pkg/routing/redisrouter.go and pkg/routing/selector). Each node writes its
 * NodeInfo into one hash every HEARTBEAT_MS; a node whose entry is older than DEAD_AFTER_MS is
 * dead and any node reaps it (its entry and its rooms in the map go, in one script). A new room
 * goes to the node the selector picks, claimed with a compare-and-set script so two nodes never
 * both own it. When Redis fails, placement answers "here" (logged, counted, gauge down) so
 * existing and new calls go on; when it answers again the node re-registers and repairs the map
 * (its rooms claimed back; a room another live node claimed meanwhile is moved there).
 *
 * Lifecycle: `createRedisRouter(deps)`; `start(selfUrl)` registers and starts the heartbeat;
 * `drain()` marks the node draining and gives its rooms up; `stop()` deregisters. Called from
 * the signalling and RoomService edges (placeRoom) and the cluster wiring (sfu/routing/cluster.ts).
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from '../../common/logger.ts';
import { repeatEvery, type Clock, type Repeating } from '../../common/clock.ts';
import type { RedisClient } from '../../common/redis.ts';
import type { SfuConfig } from '../config.ts';
import { NoNodeAvailableError, pickNode } from './selector.ts';
import type { ClusterMetrics } from './metrics.ts';
import type { NodeInfo, NodeStats, Placement, Router } from './types.ts';

/** Hash: node id → NodeInfo JSON. Hash-tagged so the scripts work on a Redis Cluster too. */
export const NODES_KEY = '{sfu}:nodes';
/** Hash: room name → id of the node that hosts it. */
export const ROOM_NODE_KEY = '{sfu}:room_node_map';

/** How often a node writes its NodeInfo. */
export const HEARTBEAT_MS = 1000;
/** A node whose last heartbeat is older than this is dead (LiveKit: 5 s, selector.AvailableSeconds). */
export const DEAD_AFTER_MS = 3000;
/** How long start-up waits for Redis before the node serves with local placement. */
const START_WAIT_MS = 5000;
/** Every this many heartbeats, the node checks the map against its rooms. */
const REPAIR_EVERY = 5;

/** Set room → node when the current value is ARGV[3] ('' = absent); answers the owner after. */
const CLAIM_SCRIPT = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (not cur and ARGV[3] == '') or cur == ARGV[3] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return ARGV[2]
end
return cur or ''`;
/** Delete room → node only while ARGV[2] owns it. */
const RELEASE_SCRIPT = `
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0`;
/** Forget node ARGV[1] and every room it owned. */
const REAP_SCRIPT = `
redis.call('HDEL', KEYS[2], ARGV[1])
local map = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #map, 2 do
  if map[i + 1] == ARGV[1] then
    redis.call('HDEL', KEYS[1], map[i])
    n = n + 1
  end
end
return n`;

/** Three claims in a row went to nodes that were gone by the time they were read. */
class PlacementUnsettledError extends Error {
  constructor(room: string) {
    super(`room ${room}: placement did not settle after 3 claims; placing it here`);
    this.name = 'PlacementUnsettledError';
  }
}

export interface RedisRouterDeps {
  config: Pick<SfuConfig, 'node_selector' | 'region' | 'rtc'>;
  redis: RedisClient;
  clock: Clock;
  logger: Logger;
  metrics: ClusterMetrics;
  /** This node's figures, read at each heartbeat. */
  stats: () => NodeStats;
  /** Names of the rooms open on this node. */
  localRooms: () => string[];
  /** Another live node owns a room this node also has (after a Redis outage): move its participants there. */
  moveRoom: (room: string) => void;
  /** A node was declared dead (its rooms freed). */
  onNodeDead?: (nodeId: string) => void;
  nodeId?: string;
  random?: () => number;
}

export interface RedisRouter extends Router {
  /** Heartbeat data of a node as last read, for relays to notice their host died. */
  isKnownDead(nodeId: string): boolean;
  roomClosed(room: string): void;
  /** One heartbeat now (tests drive it with a manual clock). */
  heartbeat(): Promise<void>;
}

export function createRedisRouter(deps: RedisRouterDeps): RedisRouter {
  const { redis, clock, metrics } = deps;
  const log = deps.logger.child({ component: 'routing' });
  const nodeId = deps.nodeId ?? `ND_${randomBytes(6).toString('hex')}`;
  const startedAt = clock.now();
  let selfUrl = '';
  let draining = false;
  let redisUp = true;
  let started = false;
  let beats = 0;
  /** No node is reaped from its heartbeat's age before this (just after a Redis outage). */
  let reapAfter = 0;
  let ticker: Repeating | undefined;
  let beating: Promise<void> | undefined;
  /** Rooms this node owned in the map but had no room for, at the last repair round. */
  let orphansSeen = new Set<string>();
  const known = new Map<string, NodeInfo>();
  const dead = new Set<string>();

  const self = (): NodeInfo => ({
    id: nodeId,
    region: deps.config.region,
    state: draining ? 'draining' : 'serving',
    signalUrl: selfUrl,
    nodeIp: deps.config.rtc.node_ip,
    portRange: [deps.config.rtc.port_range_start, deps.config.rtc.port_range_end],
    startedAt,
    updatedAt: clock.now(),
    stats: deps.stats(),
  });

  const alive = (n: NodeInfo) => clock.now() - n.updatedAt < DEAD_AFTER_MS;

  function redisFailed(err: unknown, what: string): void {
    if (redisUp) log.warn({ err: (err as Error).message, what }, 'redis unreachable: placing new rooms on this node until it answers');
    redisUp = false;
    metrics.redisUp(false);
  }

  async function readNodes(): Promise<NodeInfo[]> {
    const raw = await redis.hgetall(NODES_KEY);
    const nodes: NodeInfo[] = [];
    for (const [id, json] of Object.entries(raw)) {
      try {
        const n = JSON.parse(json) as NodeInfo;
        if (n.id === id) nodes.push(n);
      } catch {
        log.warn({ node: id }, 'unparseable node entry in the registry: ignored');
      }
    }
    known.clear();
    for (const n of nodes) known.set(n.id, n);
    return nodes;
  }

  async function reap(id: string, why: string): Promise<void> {
    if (id === nodeId) return;
    const freed = Number(await redis.eval(REAP_SCRIPT, 2, ROOM_NODE_KEY, NODES_KEY, id));
    if (!dead.has(id)) {
      dead.add(id);
      known.delete(id);
      log.warn({ node: id, freedRooms: freed, why }, 'node declared dead: its rooms are freed');
      metrics.nodeDeclaredDead();
      try {
        deps.onNodeDead?.(id);
      } catch (err) {
        log.error({ err }, 'node-dead listener failed');
      }
    }
  }

  async function claim(room: string, candidate: string, expected: string): Promise<string> {
    return String(await redis.eval(CLAIM_SCRIPT, 1, ROOM_NODE_KEY, room, candidate, expected));
  }

  /** Claims this node's rooms back after an outage; a room a live node took meanwhile moves there. */
  async function repair(): Promise<void> {
    const mine = deps.localRooms();
    const map = await redis.hgetall(ROOM_NODE_KEY);
    const nodes = new Map((await readNodes()).map((n) => [n.id, n]));
    for (const room of mine) {
      const owner = map[room];
      if (owner === nodeId) continue;
      if (draining) continue;
      const ownerNode = owner ? nodes.get(owner) : undefined;
      if (owner && ownerNode && alive(ownerNode)) {
        log.warn({ room, owner }, 'another node hosts this room too (created during a redis outage): moving its participants there');
        metrics.roomMoved();
        deps.moveRoom(room);
        continue;
      }
      const winner = await claim(room, nodeId, owner ?? '');
      if (winner !== nodeId) {
        metrics.roomMoved();
        deps.moveRoom(room);
      }
    }
    // Entries naming this node without a room here (a join that never happened): free them
    // when seen twice in a row, so a join in flight keeps its claim.
    const here = new Set(mine);
    const orphans = new Set(Object.entries(map).filter(([r, id]) => id === nodeId && !here.has(r)).map(([r]) => r));
    for (const room of orphans) {
      if (orphansSeen.has(room)) await redis.eval(RELEASE_SCRIPT, 1, ROOM_NODE_KEY, room, nodeId);
    }
    orphansSeen = orphans;
  }

  async function beat(): Promise<void> {
    try {
      await redis.hset(NODES_KEY, nodeId, JSON.stringify(self()));
      const recovered = !redisUp;
      if (recovered) {
        // The others could not write either while Redis was away: give them a heartbeat
        // period to show up again before any of them is taken for dead.
        reapAfter = clock.now() + DEAD_AFTER_MS;
        redisUp = true;
        metrics.redisUp(true);
        log.info('redis answers again: node re-registered; repairing the room map');
      }
      const nodes = await readNodes();
      let live = 0;
      for (const n of nodes) {
        if (n.id === nodeId) live++;
        else if (alive(n)) {
          live++;
          dead.delete(n.id);
        } else if (clock.now() >= reapAfter) await reap(n.id, `no heartbeat for ${clock.now() - n.updatedAt} ms`);
      }
      metrics.nodes(live);
      if (recovered || ++beats % REPAIR_EVERY === 0) await repair();
    } catch (err) {
      redisFailed(err, 'heartbeat');
    }
  }

  /**
   * Commands fail fast while disconnected: at start, give the first connection attempt a moment
   * to succeed, but not to fail (an unreachable Redis must not delay serving).
   */
  async function untilReady(ms: number): Promise<void> {
    if (redis.status === 'ready') return;
    await new Promise<void>((resolve) => {
      const timer = clock.setTimeout(done, ms);
      function done() {
        clock.clearTimeout(timer);
        redis.off('ready', done);
        redis.off('error', done);
        resolve();
      }
      redis.once('ready', done);
      redis.once('error', done);
    });
  }

  const heartbeat = (): Promise<void> => (beating ??= beat().finally(() => (beating = undefined)));

  function fallbackHere(): Placement {
    metrics.localFallback();
    return { kind: 'local' };
  }

  async function nodeById(id: string): Promise<NodeInfo | undefined> {
    const json = await redis.hget(NODES_KEY, id);
    if (!json) return undefined;
    try {
      const n = JSON.parse(json) as NodeInfo;
      known.set(id, n);
      return n;
    } catch {
      log.warn({ node: id }, 'unparseable node entry in the registry: taken as not registered');
      return undefined;
    }
  }

  async function place(room: string, create: boolean): Promise<Placement | undefined> {
    let owner = (await redis.hget(ROOM_NODE_KEY, room)) ?? '';
    for (let attempt = 0; attempt < 3; attempt++) {
      if (owner === nodeId) return { kind: 'local' };
      if (owner) {
        const n = await nodeById(owner);
        // Just after an outage a stale heartbeat proves nothing: the relay finds out (refused = reaped).
        if (n && (alive(n) || clock.now() < reapAfter)) return { kind: 'remote', node: n };
        await reap(owner, n ? `no heartbeat for ${clock.now() - n.updatedAt} ms` : 'not registered');
        owner = '';
      }
      // Not placed: a room this node still has (map lost in an outage) stays here.
      if (!draining && deps.localRooms().includes(room)) {
        const winner = await claim(room, nodeId, '');
        if (winner === nodeId) return { kind: 'local' };
        owner = winner;
        continue;
      }
      if (!create) return undefined;
      const serving = (await readNodes()).filter((n) => n.state === 'serving' && alive(n) && n.id !== nodeId);
      if (!draining) serving.push(self());
      const picked = pickNode(deps.config, serving, deps.random);
      const winner = await claim(room, picked.id, '');
      if (winner === nodeId) return { kind: 'local' };
      owner = winner;
      const n = known.get(winner);
      if (n && alive(n) && winner === picked.id) return { kind: 'remote', node: n };
    }
    throw new PlacementUnsettledError(room);
  }

  return {
    nodeId,
    clustered: true,
    get draining() {
      return draining;
    },

    async placeRoom(room, create) {
      if (!redisUp && redis.status !== 'ready') return create ? fallbackHere() : { kind: 'local' };
      try {
        return await place(room, create);
      } catch (err) {
        if (err instanceof NoNodeAvailableError) throw err;
        if (err instanceof PlacementUnsettledError) {
          // Claims kept changing hands (nodes coming and going): serve it here, the repair settles it.
          log.warn({ room }, err.message);
          return { kind: 'local' };
        }
        redisFailed(err, 'placement');
        // The room lives here for now; the repair after the outage settles it.
        if (!create && !deps.localRooms().includes(room)) return undefined;
        return fallbackHere();
      }
    },

    async liveNodes() {
      try {
        return (await readNodes()).filter((n) => n.id === nodeId || alive(n));
      } catch (err) {
        redisFailed(err, 'list nodes');
        return [self()];
      }
    },

    async reportUnreachable(id) {
      try {
        await reap(id, 'its signalling address refuses connections');
      } catch (err) {
        redisFailed(err, 'reap');
      }
    },

    isKnownDead: (id) => dead.has(id) || (known.has(id) && !alive(known.get(id)!)),

    roomClosed(room) {
      if (draining) return;
      void redis.eval(RELEASE_SCRIPT, 1, ROOM_NODE_KEY, room, nodeId).catch((err: unknown) => redisFailed(err, 'release'));
    },

    async drain() {
      draining = true;
      try {
        await redis.hset(NODES_KEY, nodeId, JSON.stringify(self()));
        for (const room of deps.localRooms()) await redis.eval(RELEASE_SCRIPT, 1, ROOM_NODE_KEY, room, nodeId);
        log.info({ rooms: deps.localRooms().length }, 'draining: no new rooms here, this node\'s rooms given up in the map');
      } catch (err) {
        redisFailed(err, 'drain');
      }
    },

    heartbeat,

    async start(url) {
      selfUrl = url;
      if (started) return;
      started = true;
      metrics.redisUp(true);
      await untilReady(START_WAIT_MS);
      await heartbeat();
      ticker = repeatEvery(clock, HEARTBEAT_MS, () => void heartbeat(), (err) => log.error({ err }, 'heartbeat failed'));
      ticker.start();
      log.info({ node: nodeId, url, region: deps.config.region }, 'registered in the cluster');
    },

    async stop() {
      ticker?.stop();
      await beating;
      try {
        // Our own rooms and entry go at once: the others need not wait for the heartbeat to age.
        await redis.eval(REAP_SCRIPT, 2, ROOM_NODE_KEY, NODES_KEY, nodeId);
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'could not deregister from redis (the others reap this node when its heartbeat ages)');
      }
    },
  };
}
