/**
 * The Redis router against a real redis-server with injected clocks: two nodes racing to place
 * a new room agree on one owner; a node whose heartbeat stops is declared dead after
 * DEAD_AFTER_MS and its rooms are freed; while Redis is down rooms are placed locally (logged
 * and counted) and when it is back the node re-registers and claims its rooms again.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { createManualClock, type ManualClock } from '../../common/clock.ts';
import { createSilentLogger } from '../../common/logger.ts';
import { createRedisConnection, type RedisClient } from '../../common/redis.ts';
import { defaultSfuConfig } from '../../sfu/config.ts';
import { createClusterMetrics } from '../../sfu/routing/metrics.ts';
import { createRedisRouter, DEAD_AFTER_MS, NODES_KEY, ROOM_NODE_KEY, type RedisRouter } from '../../sfu/routing/redis-router.ts';
import { startRedisServer, type RunningRedis } from '../support/redis-server.ts';
import { waitFor } from '../support/wait.ts';
import { freePort } from '../support/ports.ts';

interface TestNode {
  router: RedisRouter;
  clock: ManualClock;
  registry: Registry;
  rooms: Set<string>;
  moved: string[];
  dead: string[];
  redis: RedisClient;
}

async function metric(n: TestNode, name: string): Promise<number> {
  const last = (await n.registry.getSingleMetricAsString(name)).split('\n').at(-1) ?? '';
  return Number(/ (\S+)$/.exec(last)?.[1]);
}

describe('redis router', () => {
  let redis: RunningRedis | undefined;
  const nodes: TestNode[] = [];
  afterEach(async () => {
    for (const n of nodes.splice(0)) {
      await n.router.stop();
      n.redis.disconnect();
    }
    await redis?.stop();
    redis = undefined;
  });

  async function node(id: string, opts: { random?: () => number; port?: number } = {}): Promise<TestNode> {
    const clock = createManualClock(1_800_000_000_000);
    const registry = new Registry();
    const client = createRedisConnection({ address: `127.0.0.1:${opts.port ?? redis!.port}`, failFastMs: 500 }, createSilentLogger());
    const rooms = new Set<string>();
    const moved: string[] = [];
    const dead: string[] = [];
    const router = createRedisRouter({
      config: { ...defaultSfuConfig() },
      redis: client,
      clock,
      logger: createSilentLogger(),
      metrics: createClusterMetrics(registry),
      nodeId: id,
      stats: () => ({ cpuLoad: 0, sysload: 0, numCpus: 1, bytesPerSec: 0, packetsPerSec: 0, rooms: rooms.size, participants: 0, tracks: 0 }),
      localRooms: () => [...rooms],
      moveRoom: (room) => moved.push(room),
      onNodeDead: (d) => dead.push(d),
      ...(opts.random ? { random: opts.random } : {}),
    });
    await router.start(`http://${id}.invalid:7880`);
    const n = { router, clock, registry, rooms, moved, dead, redis: client };
    nodes.push(n);
    return n;
  }

  it('places a new room on exactly one node when two nodes race for it', async () => {
    redis = await startRedisServer();
    const a = await node('ND_a');
    const b = await node('ND_b');
    for (let i = 0; i < 20; i++) {
      const room = `race-${i}`;
      const [pa, pb] = await Promise.all([a.router.placeRoom(room, true), b.router.placeRoom(room, true)]);
      const ownerA = pa?.kind === 'local' ? 'ND_a' : pa?.node.id;
      const ownerB = pb?.kind === 'local' ? 'ND_b' : pb?.node.id;
      expect(ownerA).toBe(ownerB);
      expect(await a.redis.hget(ROOM_NODE_KEY, room)).toBe(ownerA);
    }
    // An unplaced room is not created by a lookup.
    expect(await a.router.placeRoom('nobody-here', false)).toBeUndefined();
  });

  it('declares a node dead once its heartbeat is older than DEAD_AFTER_MS and frees its rooms', async () => {
    redis = await startRedisServer();
    // a places everything on itself (random 0 picks the first serving node, then itself last).
    const a = await node('ND_a', { random: () => 0.999 });
    const b = await node('ND_b');
    a.rooms.add('call');
    expect(await a.router.placeRoom('call', true)).toEqual({ kind: 'local' });
    expect((await b.router.placeRoom('call', false))?.kind).toBe('remote');

    // a's clock stands still (its heartbeat stops); b's goes on.
    b.clock.advance(DEAD_AFTER_MS - 100);
    await b.router.heartbeat();
    expect(b.dead).toEqual([]);
    expect((await b.router.placeRoom('call', false))?.kind).toBe('remote');
    b.clock.advance(200);
    await b.router.heartbeat();
    expect(b.dead).toEqual(['ND_a']);
    expect(await b.redis.hget(ROOM_NODE_KEY, 'call')).toBeNull();
    expect(await b.redis.hexists(NODES_KEY, 'ND_a')).toBe(0);
    expect(b.router.isKnownDead('ND_a')).toBe(true);
    // The room comes back on a live node under the same name.
    expect(await b.router.placeRoom('call', true)).toEqual({ kind: 'local' });
    expect(await metric(b, 'matrixrtc_sfu_cluster_nodes_declared_dead_total')).toBe(1);
  });

  it('takes a garbled registry entry for an unregistered node and places its room again', async () => {
    redis = await startRedisServer();
    const a = await node('ND_a');
    await a.redis.hset(NODES_KEY, 'ND_bad', '{not json');
    await a.redis.hset(ROOM_NODE_KEY, 'orphaned', 'ND_bad');
    await a.router.heartbeat();
    expect(await metric(a, 'matrixrtc_sfu_cluster_redis_up')).toBe(1);
    expect(await a.router.placeRoom('orphaned', true)).toEqual({ kind: 'local' });
    expect(await a.redis.hget(ROOM_NODE_KEY, 'orphaned')).toBe('ND_a');
    expect(await a.redis.hexists(NODES_KEY, 'ND_bad')).toBe(0);
  });

  it('reaps a node at once when its address refuses connections', async () => {
    redis = await startRedisServer();
    const a = await node('ND_a', { random: () => 0.999 });
    const b = await node('ND_b');
    a.rooms.add('call');
    await a.router.placeRoom('call', true);
    await b.router.reportUnreachable('ND_a');
    expect(b.dead).toEqual(['ND_a']);
    expect(await b.redis.hget(ROOM_NODE_KEY, 'call')).toBeNull();
  });

  it('a draining node gives its rooms up and places new rooms on the others', async () => {
    redis = await startRedisServer();
    const a = await node('ND_a', { random: () => 0.999 });
    const b = await node('ND_b');
    a.rooms.add('old');
    expect(await a.router.placeRoom('old', true)).toEqual({ kind: 'local' });
    await a.router.drain();
    expect(await a.redis.hget(ROOM_NODE_KEY, 'old')).toBeNull();
    for (const room of ['old', 'new-1', 'new-2']) {
      const p = await a.router.placeRoom(room, true);
      expect(p?.kind === 'remote' ? p.node.id : 'ND_a').toBe('ND_b');
    }
    expect(JSON.parse((await b.redis.hget(NODES_KEY, 'ND_a'))!).state).toBe('draining');
  });

  it('starts serving at once when redis does not answer at start-up, placing rooms locally', async () => {
    // A port nothing listens on; the manual clock never advances, so only the failed connect can end the wait.
    const closed = await freePort();
    const a = await node('ND_a', { port: closed });
    expect(await a.router.placeRoom('early', true)).toEqual({ kind: 'local' });
    expect(await metric(a, 'matrixrtc_sfu_cluster_redis_up')).toBe(0);
  });

  it('places rooms locally while redis is down and repairs the map when it is back', async () => {
    redis = await startRedisServer();
    const port = redis.port;
    const a = await node('ND_a');
    expect(await metric(a, 'matrixrtc_sfu_cluster_redis_up')).toBe(1);
    await redis.stop();
    redis = undefined;

    const started = Date.now();
    expect(await a.router.placeRoom('during-outage', true)).toEqual({ kind: 'local' });
    expect(Date.now() - started).toBeLessThan(2000);
    a.rooms.add('during-outage');
    expect(await metric(a, 'matrixrtc_sfu_cluster_redis_up')).toBe(0);
    expect(await metric(a, 'matrixrtc_sfu_cluster_local_fallbacks_total')).toBeGreaterThanOrEqual(1);
    await a.router.heartbeat();

    redis = await startRedisServer({ port });
    await waitFor('redis reconnect', () => a.redis.status === 'ready', { timeoutMs: 15_000 });
    await a.router.heartbeat();
    expect(await metric(a, 'matrixrtc_sfu_cluster_redis_up')).toBe(1);
    expect(await a.redis.hexists(NODES_KEY, 'ND_a')).toBe(1);
    expect(await a.redis.hget(ROOM_NODE_KEY, 'during-outage')).toBe('ND_a');
  });

  it('moves a room two nodes created during an outage to the owner in the map', async () => {
    redis = await startRedisServer();
    const a = await node('ND_a');
    const b = await node('ND_b');
    // b holds the claim; a created the same room on its own while it could not see redis.
    await b.redis.hset(ROOM_NODE_KEY, 'split', 'ND_b');
    b.rooms.add('split');
    a.rooms.add('split');
    // The map is checked against the node's rooms every few heartbeats.
    for (let i = 0; i < 5; i++) {
      await b.router.heartbeat();
      await a.router.heartbeat();
    }
    expect(a.moved).toEqual(['split']);
    expect(await a.redis.hget(ROOM_NODE_KEY, 'split')).toBe('ND_b');
  });
});
