/**
 * Redis stopped and started mid-call: two SFU node processes, a call relayed across them. While
 * redis-server is down the call goes on (both still hear each other), a new room is created on
 * the node the client reached (logged, counted, matrixrtc_sfu_cluster_redis_up 0); when Redis
 * is back the nodes re-register and claim their rooms again, and ListRooms through either node
 * lists both rooms.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startClusterScene, hearTone, type ClusterScene } from '../support/sfu-cluster.ts';
import { startRedisServer } from '../support/redis-server.ts';
import type { SfuNodeProcess } from '../support/sfu-node-process.ts';
import { waitFor } from '../support/wait.ts';

async function metric(n: SfuNodeProcess, name: string): Promise<number> {
  const text = await (await fetch(`${n.url}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\S+)`, 'm').exec(text)?.[1] ?? Number.NaN);
}

describe('sfu cluster: redis trouble', () => {
  let scene: ClusterScene | undefined;
  afterEach(async () => {
    await scene?.end();
    scene = undefined;
  });

  it('keeps the call going while redis is down and repairs the map when it returns', { timeout: 120_000 }, async () => {
    scene = await startClusterScene({ nodes: 2 });
    const [a, b] = scene.nodes as [SfuNodeProcess, SfuNodeProcess];
    const alice = await scene.connect(a.wsUrl, 'alice', 'call');
    const bob = await scene.connect(b.wsUrl, 'bob', 'call');
    await alice.publishTone(440);
    await bob.publishTone(660);
    await Promise.all([hearTone(bob, 'alice'), hearTone(alice, 'bob')]);

    const port = scene.redis.port;
    await scene.redis.stop();
    await waitFor('both nodes see redis down', async () => (await metric(a, 'matrixrtc_sfu_cluster_redis_up')) === 0 && (await metric(b, 'matrixrtc_sfu_cluster_redis_up')) === 0, {
      timeoutMs: 10_000,
    });
    // The running call does not need Redis.
    const [atBob, atAlice] = await Promise.all([hearTone(bob, 'alice'), hearTone(alice, 'bob')]);
    expect(Math.abs(atBob.frequency - 440)).toBeLessThanOrEqual(5);
    expect(Math.abs(atAlice.frequency - 660)).toBeLessThanOrEqual(5);
    // A new room goes on the node the client reached.
    const carol = await scene.connect(a.wsUrl, 'carol', 'during-outage');
    expect(carol.room.isConnected).toBe(true);
    expect(await metric(a, 'matrixrtc_sfu_cluster_local_fallbacks_total')).toBeGreaterThanOrEqual(1);
    expect(a.log()).toContain('redis unreachable: placing new rooms on this node');

    scene.redis = await startRedisServer({ port });
    await waitFor('both nodes re-registered', async () => (await metric(a, 'matrixrtc_sfu_cluster_redis_up')) === 1 && (await metric(b, 'matrixrtc_sfu_cluster_redis_up')) === 1 && (await metric(a, 'matrixrtc_sfu_cluster_nodes')) === 2, {
      timeoutMs: 20_000,
      intervalMs: 200,
    });
    for (const node of [a, b]) {
      await waitFor('both rooms listed cluster-wide', async () => {
        const names = (await scene!.api(node).listRooms()).map((r) => r.name).toSorted();
        return names.join() === 'call,during-outage';
      });
      expect((await scene.api(node).listParticipants('call')).map((p) => p.identity).toSorted()).toEqual(['alice', 'bob']);
    }
    // Still one call, still both tones.
    const [again, againAlice] = await Promise.all([hearTone(bob, 'alice'), hearTone(alice, 'bob')]);
    expect(Math.abs(again.frequency - 440)).toBeLessThanOrEqual(5);
    expect(Math.abs(againAlice.frequency - 660)).toBeLessThanOrEqual(5);
    expect(alice.room.isConnected && bob.room.isConnected).toBe(true);
  });
});
