/**
 * The node sheds load instead of degrading every call: over `overload.max_participants`,
 * `overload.cpu_load_limit` (CPU over a window on the injected clock), LiveKit's
 * `limit.num_tracks` or `limit.bytes_per_sec`, new joins get LiveKit's 503 "node has exceeded
 * its configured limit" on /rtc/validate and on the WebSocket, while the participants already
 * in keep going. `limit.subscription_limit_audio` holds further subscriptions until a slot frees
 * (LiveKit's subscription manager). Real rtc-node publishers where media is needed.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ParticipantInfo_State, SignalRequest } from '@livekit/protocol';
import { createManualClock } from '../../common/clock.ts';
import { startTestSfu, type TestSfu } from '../support/sfu-harness.ts';
import { openRaw, rtcUrl, upgradeRefusal, type RawClient } from '../support/raw-signal.ts';
import { rtcNodeScene } from '../support/rtc-node.ts';
import { waitFor } from '../support/wait.ts';

const NODE_LIMIT = 'node has exceeded its configured limit';

async function validate(sfu: TestSfu, identity: string, room = 'test-room'): Promise<[number, string]> {
  const t = await sfu.token(identity, { roomJoin: true, room });
  const res = await fetch(`${sfu.url}/rtc/validate?access_token=${t}`);
  return [res.status, await res.text()];
}

async function refusals(sfu: TestSfu, limit: string): Promise<number> {
  const text = await (await fetch(`${sfu.url}/metrics`)).text();
  const m = new RegExp(`^matrixrtc_sfu_limit_refusals_total\\{limit="${limit.replace(/\./g, '\\.')}"\\} (\\d+)`, 'm').exec(text);
  return Number(m?.[1] ?? 0);
}

describe('sfu overload', () => {
  let sfu: TestSfu | undefined;
  const clients: RawClient[] = [];
  const join = async (identity: string, room = 'test-room') => {
    const c = await openRaw(rtcUrl(sfu!, await sfu!.token(identity, { roomJoin: true, room })));
    clients.push(c);
    await c.next('join');
    return c;
  };
  const scene = rtcNodeScene();

  afterEach(async () => {
    for (const c of clients.splice(0)) c.ws.terminate();
    await sfu?.stop();
    sfu = undefined;
    await scene.end();
  });

  it("refuses joins beyond overload.max_participants on the node with LiveKit's 503, until someone leaves", async () => {
    sfu = await startTestSfu({ overload: { max_participants: 2 } });
    const alice = await join('alice');
    await join('bob', 'other-room');
    expect(await validate(sfu, 'carol')).toEqual([503, NODE_LIMIT]);
    const refused = await upgradeRefusal(rtcUrl(sfu, await sfu.token('carol', { roomJoin: true, room: 'third-room' })));
    expect([refused.status, refused.body]).toEqual([503, NODE_LIMIT]);
    // Someone already in replaces their own session: nothing is added to the node.
    expect(await validate(sfu, 'alice')).toEqual([200, 'success']);
    alice.ws.close();
    await alice.closed;
    await waitFor('carol admitted once alice left', async () => (await validate(sfu!, 'carol'))[0] === 200);
    expect(await refusals(sfu, 'overload.max_participants')).toBeGreaterThanOrEqual(2);
  });

  it('refuses joins while the process used more CPU than overload.cpu_load_limit over the last window', async () => {
    const clock = createManualClock(Date.now());
    const cpu = { user: 0, system: 0 };
    sfu = await startTestSfu({ clock, cpuUsage: () => ({ ...cpu }), overload: { cpu_load_limit: 0.8, window_seconds: 5 } });
    const alice = await join('alice');
    expect(await validate(sfu, 'bob')).toEqual([200, 'success']);

    // 4.5 s of CPU in a 5 s window: 0.9 cores.
    cpu.user += 4_000_000;
    cpu.system += 500_000;
    clock.advance(5000);
    expect(await validate(sfu, 'bob')).toEqual([503, NODE_LIMIT]);
    const refused = await upgradeRefusal(rtcUrl(sfu, await sfu.token('bob')));
    expect([refused.status, refused.body]).toEqual([503, NODE_LIMIT]);
    // The participant already in is untouched.
    alice.send(new SignalRequest({ message: { case: 'ping', value: 1n } }));
    await alice.next('pong');

    // An idle window: joins are admitted again.
    cpu.user += 100_000;
    clock.advance(5000);
    expect(await validate(sfu, 'bob')).toEqual([200, 'success']);
    expect(await refusals(sfu, 'overload.cpu_load_limit')).toBe(2);
  });

  it("refuses joins once the node carries limit.num_tracks tracks, as LiveKit's LimitsReached", async () => {
    const s = await scene.start({ limit: { num_tracks: 1 } });
    const alice = await scene.connect('alice');
    expect(await validate(s, 'bob')).toEqual([200, 'success']);
    await alice.publishTone(440);
    await waitFor('alice track published on the SFU', () => s.sfu.rooms.getRoom('test-room')?.participants.get('alice' as never)?.published.size === 1, { timeoutMs: 15_000 });
    expect(await validate(s, 'bob')).toEqual([503, NODE_LIMIT]);
  });

  it('refuses joins while media runs above limit.bytes_per_sec', async () => {
    const s = await scene.start({ limit: { bytes_per_sec: 1000 }, overload: { window_seconds: 1 } });
    const alice = await scene.connect('alice');
    expect(await validate(s, 'bob')).toEqual([200, 'success']);
    await alice.publishTone(440);
    await waitFor('media rate over limit.bytes_per_sec', async () => (await validate(s, 'bob'))[0] === 503, { timeoutMs: 15_000 });
    expect(await validate(s, 'bob')).toEqual([503, NODE_LIMIT]);
  });

  it('holds audio subscriptions at limit.subscription_limit_audio and fills the slot when one ends', async () => {
    const s = await scene.start({ limit: { subscription_limit_audio: 1 } });
    await scene.connect('bob');
    const alice = await scene.connect('alice');
    const carol = await scene.connect('carol');
    const room = () => s.sfu.rooms.getRoom('test-room')!;
    const bobP = () => room().participants.get('bob' as never)!;
    await waitFor('bob active', () => bobP().state === ParticipantInfo_State.ACTIVE, { timeoutMs: 15_000 });
    const aliceTone = await alice.publishTone(440);
    await carol.publishTone(880);
    await waitFor('both tracks published', () =>
      ['alice', 'carol'].every((id) => room().participants.get(id as never)?.published.size === 1), { timeoutMs: 15_000 });
    // Subscribing happens as each track is published, so the limit has already been applied.
    expect(bobP().subscriptions.size).toBe(1);
    const first = [...bobP().subscriptions.values()][0]!.publisher;
    const firstClient = first === room().participants.get('alice' as never)!.sid ? alice : carol;
    const otherIdentity = firstClient === alice ? 'carol' : 'alice';
    if (firstClient === alice) await aliceTone.stop();
    await firstClient.disconnect();
    await waitFor(`bob subscribed to ${otherIdentity} once the slot freed`, () => {
      const subs = [...bobP().subscriptions.values()];
      return subs.length === 1 && subs[0]!.publisher === room().participants.get(otherIdentity as never)?.sid;
    }, { timeoutMs: 15_000 });
  });
});
