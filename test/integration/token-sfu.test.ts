/**
 * Tokens from the token service against our own SFU: a token from `/sfu/get` lets a real
 * @livekit/rtc-node participant join the SFU room for that Matrix room and no other, and a user
 * who is not in the Matrix room gets no token at all. The SFU runs with its default
 * `room.auto_create`; the full-access CreateRoom path against an SFU with `auto_create: false`
 * is covered end to end in bridge-e2e.test.ts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { legacyLiveKitIdentity, liveKitRoomAlias } from '../../bridge/token/names.ts';
import { startTestSfu, TEST_API_KEY, TEST_API_SECRET, type TestSfu } from '../support/sfu-harness.ts';
import { connectRtcNode, type RtcNodeClient } from '../support/rtc-node.ts';
import { waitFor } from '../support/wait.ts';
import { startTokenHarness, type TokenHarness } from './token-harness.ts';

const ROOM_A = '!roomA:example.com';
const ROOM_B = '!roomB:example.com';
let sfu: TestSfu | undefined;
let harness: TokenHarness | undefined;
const clients: RtcNodeClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) await c.disconnect();
  await harness?.stop();
  await sfu?.stop();
  harness = undefined;
  sfu = undefined;
});

describe('tokens on our SFU', () => {
  it('a token from /sfu/get lets a real @livekit/rtc-node participant join our SFU room for that Matrix room and no other', async () => {
    sfu = await startTestSfu();
    harness = await startTokenHarness({
      livekitUrl: sfu.wsUrl,
      fullAccess: 'trusted.example.com',
      env: { LIVEKIT_KEY: TEST_API_KEY, LIVEKIT_SECRET: TEST_API_SECRET },
    });
    const h = harness;
    const alice = h.user('alice', { joinedTo: [ROOM_A] });
    const bob = h.user('bob', { joinedTo: [ROOM_B] });
    const eve = h.user('eve');

    const tokenFor = async (u: { openid: Record<string, unknown> }, room: string) =>
      h.post('/sfu/get', { room, openid_token: u.openid, device_id: 'DEV' });
    const a = await tokenFor(alice, ROOM_A);
    const b = await tokenFor(bob, ROOM_B);
    expect(a.status).toBe(200);
    expect(b.status).toBe(200);
    expect(a.json!.url).toBe(sfu.wsUrl);
    expect((await tokenFor(eve, ROOM_A)).status).toBe(403);
    expect((await tokenFor(alice, ROOM_B)).status).toBe(403);

    const ca = await connectRtcNode(String(a.json!.url), String(a.json!.jwt));
    clients.push(ca);
    const cb = await connectRtcNode(String(b.json!.url), String(b.json!.jwt));
    clients.push(cb);
    expect(ca.room.name).toBe(liveKitRoomAlias(ROOM_A, 'm.call#ROOM'));
    expect(ca.identity).toBe(legacyLiveKitIdentity(alice.userId, 'DEV'));

    const identitiesIn = async (room: string) => (await sfu!.sfu.rooms.listParticipants(room)).map((p) => p.identity).toSorted();
    await waitFor('alice in room A', async () => (await identitiesIn(liveKitRoomAlias(ROOM_A, 'm.call#ROOM'))).length === 1 || undefined);
    expect(await identitiesIn(liveKitRoomAlias(ROOM_A, 'm.call#ROOM'))).toEqual([`${alice.userId}:DEV`]);
    expect(await identitiesIn(liveKitRoomAlias(ROOM_B, 'm.call#ROOM'))).toEqual([`${bob.userId}:DEV`]);
    expect(ca.room.remoteParticipants.size).toBe(0);
    expect(cb.room.remoteParticipants.size).toBe(0);
  });
});
