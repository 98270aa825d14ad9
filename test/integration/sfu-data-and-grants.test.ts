/**
 * Data packets and grants between @livekit/rtc-node participants through the SFU: reliable and
 * lossy data reach the right participants with the sender identity set by the server,
 * destination identities are honoured, `canPublishData`/`canSubscribe`/`canPublish` are
 * enforced, manual subscription works, and a duplicate identity evicts the older session.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { DataPacketKind, DisconnectReason } from '@livekit/rtc-node';
import { startTestSfu, type TestSfu } from '../support/sfu-harness.ts';
import { connectRtcNode, type RtcNodeClient } from '../support/rtc-node.ts';
import { waitFor } from '../support/wait.ts';

interface Received {
  text: string;
  from: string | undefined;
  kind: DataPacketKind | undefined;
}

function recordData(client: RtcNodeClient): Received[] {
  const got: Received[] = [];
  client.room.on('dataReceived' as never, ((payload: Uint8Array, participant?: { identity: string }, kind?: DataPacketKind) => {
    got.push({ text: new TextDecoder().decode(payload), from: participant?.identity, kind });
  }) as never);
  return got;
}

const enc = (s: string) => new TextEncoder().encode(s);

describe('sfu data and grants', () => {
  let sfu: TestSfu | undefined;
  const clients: RtcNodeClient[] = [];

  afterEach(async () => {
    for (const c of clients.splice(0)) await c.disconnect();
    await sfu?.stop();
    sfu = undefined;
  });

  async function join(identity: string, grant: Record<string, unknown> = {}, autoSubscribe = true) {
    const c = await connectRtcNode(sfu!.wsUrl, await sfu!.token(identity, { roomJoin: true, room: 'test-room', ...grant }), {
      autoSubscribe,
    });
    clients.push(c);
    return c;
  }

  it('delivers reliable and lossy data with the sender identity, only to listed destinations', async () => {
    sfu = await startTestSfu();
    const alice = await join('alice');
    const bob = await join('bob');
    const carol = await join('carol');
    const atBob = recordData(bob);
    const atCarol = recordData(carol);
    const atAlice = recordData(alice);

    await alice.room.localParticipant!.publishData(enc('hello all'), { reliable: true });
    await waitFor('reliable at bob and carol', () =>
      atBob.some((r) => r.text === 'hello all') && atCarol.some((r) => r.text === 'hello all'),
    );
    for (const r of [...atBob, ...atCarol]) {
      expect(r.from).toBe('alice');
      expect(r.kind).toBe(DataPacketKind.KIND_RELIABLE);
    }

    // Lossy may drop in theory, so send until it arrives (loopback: the first one does).
    await waitFor(
      'lossy at carol',
      async () => {
        await alice.room.localParticipant!.publishData(enc('fast'), { reliable: false });
        return atCarol.find((r) => r.text === 'fast');
      },
      { intervalMs: 200 },
    );
    expect(atCarol.find((r) => r.text === 'fast')).toMatchObject({ from: 'alice', kind: DataPacketKind.KIND_LOSSY });

    // Targeted reliable packet, then a broadcast: reliable is ordered, so once bob has the
    // broadcast he would already have the private one if it had been sent to him.
    await alice.room.localParticipant!.publishData(enc('for carol'), { reliable: true, destination_identities: ['carol'] });
    await alice.room.localParticipant!.publishData(enc('barrier'), { reliable: true });
    await waitFor('barrier at bob', () => atBob.some((r) => r.text === 'barrier'));
    await waitFor('private at carol', () => atCarol.some((r) => r.text === 'for carol'));
    expect(atBob.some((r) => r.text === 'for carol')).toBe(false);
    expect(atAlice).toHaveLength(0);
  });

  it('drops data from a participant without canPublishData', async () => {
    sfu = await startTestSfu();
    const mute = await join('mute', { canPublishData: false });
    const bob = await join('bob');
    const atBob = recordData(bob);
    await mute.room.localParticipant!.publishData(enc('forbidden'), { reliable: true }).catch(() => undefined);
    // Wait until the SFU has had the packet in hand: its reliable channel from `mute` is open.
    await mute.room.localParticipant!.publishData(enc('forbidden 2'), { reliable: true }).catch(() => undefined);
    const alice = await join('alice');
    await alice.room.localParticipant!.publishData(enc('allowed'), { reliable: true });
    await waitFor('allowed at bob', () => atBob.some((r) => r.text === 'allowed'));
    expect(atBob.map((r) => r.text)).toEqual(['allowed']);
  });

  it('forwards nothing to a participant without canSubscribe and refuses publishing without canPublish', async () => {
    sfu = await startTestSfu();
    const watcher = await join('watcher', { canSubscribe: false });
    const bob = await join('bob');
    const alice = await join('alice');
    const subscribed = bob.waitForEvent('trackSubscribed', (_t, _pub, p) => p.identity === 'alice', 15_000);
    const published = watcher.waitForEvent('trackPublished', (_pub, p) => p.identity === 'alice', 15_000);
    await alice.publishTone(440);
    await subscribed;
    await published;
    const room = sfu.sfu.rooms.getRoom('test-room')!;
    expect(room.participants.get('watcher' as never)!.subscriptions.size).toBe(0);
    expect(room.participants.get('bob' as never)!.subscriptions.size).toBe(1);

    const listener = await join('listener', { canPublish: false });
    await expect(listener.publishTone(440)).rejects.toThrow();
    expect(room.participants.get('listener' as never)!.published.size).toBe(0);
  });

  it('subscribes and unsubscribes on request when auto-subscribe is off', async () => {
    sfu = await startTestSfu();
    const bob = await join('bob', {}, false);
    const alice = await join('alice');
    const published = bob.waitForEvent('trackPublished', (_pub, p) => p.identity === 'alice', 15_000);
    await alice.publishTone(440);
    const [publication] = await published;
    const room = sfu.sfu.rooms.getRoom('test-room')!;
    expect(room.participants.get('bob' as never)!.subscriptions.size).toBe(0);

    const subscribed = bob.waitForEvent('trackSubscribed', (_t, pub) => pub.sid === publication.sid);
    publication.setSubscribed(true);
    await subscribed;
    const unsubscribed = bob.waitForEvent('trackUnsubscribed', (_t, pub) => pub.sid === publication.sid);
    publication.setSubscribed(false);
    await unsubscribed;
    await waitFor('server dropped the subscription', () => room.participants.get('bob' as never)!.subscriptions.size === 0);
  });

  it('evicts the older session of a duplicate identity, seen by the others as leave and join', async () => {
    sfu = await startTestSfu();
    const bob = await join('bob');
    const first = await join('alice');
    const evicted = first.waitForEvent('disconnected');
    const left = bob.waitForEvent('participantDisconnected', (p) => p.identity === 'alice');
    const second = await join('alice');
    const [reason] = await evicted;
    expect(reason).toBe(DisconnectReason.DUPLICATE_IDENTITY);
    await left;
    await waitFor('alice present again at bob', () => bob.room.remoteParticipants.has('alice'));
    expect(second.room.isConnected).toBe(true);
  });
});
