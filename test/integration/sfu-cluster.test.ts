/**
 * Two SFU node processes on one real redis-server, as LiveKit runs several nodes: two rtc-node
 * participants joining one room through different nodes are in one room and hear each other's
 * tone (one of them through the signalling relay, media straight to the hosting node); the
 * RoomService of either node lists the room and both participants and removes them; every
 * webhook is sent once, by the hosting node.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { TrackType } from 'livekit-server-sdk';
import { startClusterScene, hearTone, type ClusterScene } from '../support/sfu-cluster.ts';
import { waitFor } from '../support/wait.ts';
import type { SfuNodeProcess } from '../support/sfu-node-process.ts';

async function relayed(n: SfuNodeProcess): Promise<number> {
  const text = await (await fetch(`${n.url}/metrics`)).text();
  return Number(/^matrixrtc_sfu_cluster_relayed_sessions (\d+)/m.exec(text)?.[1] ?? -1);
}

describe('sfu cluster on redis', () => {
  let scene: ClusterScene | undefined;
  afterEach(async () => {
    await scene?.end();
    scene = undefined;
  });

  it('joins participants of one room through two nodes into one room that hears both tones', { timeout: 90_000 }, async () => {
    scene = await startClusterScene({ nodes: 2, webhooks: true });
    const [a, b] = scene.nodes as [SfuNodeProcess, SfuNodeProcess];
    const room = 'cluster-room';
    const alice = await scene.connect(a.wsUrl, 'alice', room);
    const bob = await scene.connect(b.wsUrl, 'bob', room);
    await alice.publishTone(440);
    await bob.publishTone(660);

    const [atBob, atAlice] = await Promise.all([hearTone(bob, 'alice'), hearTone(alice, 'bob')]);
    expect(atBob.rms).toBeGreaterThan(1000);
    expect(atBob.frequency).toBeGreaterThanOrEqual(435);
    expect(atBob.frequency).toBeLessThanOrEqual(445);
    expect(atAlice.rms).toBeGreaterThan(1000);
    expect(atAlice.frequency).toBeGreaterThanOrEqual(655);
    expect(atAlice.frequency).toBeLessThanOrEqual(665);

    // Exactly one node hosts the room; the other relayed one of the two sessions.
    expect((await relayed(a)) + (await relayed(b))).toBe(1);

    for (const node of [a, b]) {
      const api = scene.api(node);
      const rooms = await api.listRooms();
      expect(rooms.map((r) => r.name)).toEqual([room]);
      expect(rooms[0]!.numParticipants).toBe(2);
      const people = await api.listParticipants(room);
      expect(people.map((p) => p.identity).toSorted()).toEqual(['alice', 'bob']);
      const published = people.find((p) => p.identity === 'alice')!.tracks.find((t) => t.type === TrackType.AUDIO);
      expect(published).toBeDefined();
      expect((await api.getParticipant(room, 'bob')).identity).toBe('bob');
      // The hosting node's errors come back with their Twirp code, whichever node was asked.
      await expect(api.getParticipant(room, 'nobody')).rejects.toMatchObject({ code: 'not_found' });
    }

    // Removing through either node reaches the participant wherever it is.
    const aliceGone = alice.waitForEvent('disconnected', () => true, 10_000);
    await scene.api(b).removeParticipant(room, 'alice');
    await aliceGone;
    const bobGone = bob.waitForEvent('disconnected', () => true, 10_000);
    await scene.api(a).removeParticipant(room, 'bob');
    await bobGone;
    for (const node of [a, b]) expect(await scene.api(node).listParticipants(room)).toEqual([]);
    await scene.api(a).deleteRoom(room);
    for (const node of [a, b]) expect(await scene.api(node).listRooms()).toEqual([]);

    // One webhook per event, whichever node the participant came in through.
    const hooks = scene.webhooks!;
    await waitFor('room_finished webhook', () => hooks.accepted().some((e) => e.event === 'room_finished'), { timeoutMs: 10_000 });
    const count = (event: string, identity?: string) =>
      hooks.accepted().filter((e) => e.event === event && (identity === undefined || e.participant?.identity === identity)).length;
    expect(count('room_started')).toBe(1);
    expect(count('room_finished')).toBe(1);
    for (const who of ['alice', 'bob']) {
      expect(count('participant_joined', who)).toBe(1);
      expect(count('participant_left', who)).toBe(1);
      expect(count('track_published', who)).toBe(1);
    }
  });

  it('with auto_create off, a room created through one node is joined and validated through the other', { timeout: 60_000 }, async () => {
    scene = await startClusterScene({ nodes: 2, node: { extra: { room: { auto_create: false } } } });
    const [a, b] = scene.nodes as [SfuNodeProcess, SfuNodeProcess];
    const validate = async (n: SfuNodeProcess, room: string) => {
      const res = await fetch(`${n.url}/rtc/validate?access_token=${await scene!.token('dave', room)}`);
      return `${res.status} ${await res.text()}`;
    };
    for (const n of [a, b]) expect(await validate(n, 'planned')).toBe('404 requested room does not exist');
    await scene.api(b).createRoom({ name: 'planned', emptyTimeout: 60 });
    // CreateRoom is idempotent across the cluster: the same room, wherever it was asked for.
    const again = await scene.api(a).createRoom({ name: 'planned' });
    expect((await scene.api(b).listRooms()).map((r) => r.sid)).toEqual([again.sid]);
    for (const n of [a, b]) expect(await validate(n, 'planned')).toBe('200 success');
    await scene.connect(a.wsUrl, 'dave', 'planned');
    await scene.connect(b.wsUrl, 'erin', 'planned');
    for (const n of [a, b]) {
      expect((await scene.api(n).listParticipants('planned')).map((p) => p.identity).toSorted()).toEqual(['dave', 'erin']);
    }
  });
});
