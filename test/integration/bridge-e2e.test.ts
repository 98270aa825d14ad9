/**
 * The bridge end to end, with nothing faked of ours: the fake homeserver pushes transactions to
 * the whole bridge process (createBridge), the bridge drives our SFU (RoomService Twirp, rooms
 * not auto-created) and @livekit/rtc-node participants join with tokens from the bridge's own
 * `/sfu/get` and `/get_token`. Proves issue 6's "done when" against the real SFU: a call makes
 * the SFU room exist; leave, kick, ban and expiry disconnect the participant (reason
 * PARTICIPANT_REMOVED) within 1 s of the push (or of the expiry); the last leave deletes the
 * room after the grace and a rejoin inside it keeps it; a forged key leaves the victim
 * connected; a full-access `/get_token` creates the room; the delegated delayed leave is sent
 * when the SFU's own webhook reports the disconnect; against the fake's Synapse 1.132 delayed
 * events (path form unknown, `{action}` form authenticated) the bridge falls back to acting as the
 * user and keeps an Element-Call-style delayed leave alive until the participant disconnects.
 * Each runs with the memory and Redis store.
 */
import { describe, expect, it } from 'vitest';
import { DisconnectReason } from '@livekit/rtc-node';
import { legacyLiveKitIdentity, liveKitIdentityForMember, liveKitRoomAlias } from '../../bridge/token/names.ts';
import { waitFor } from '../support/wait.ts';
import { CALL, joinContent, SLOT, worldPerTest, stateKeyOf, within, type StoreKind, type World } from './bridge-e2e-world.ts';

const worlds = worldPerTest();

const REMOVAL_BOUND_MS = 1000;

for (const kind of ['memory', 'redis'] as StoreKind[]) {
  describe(`bridge end to end on our SFU with the ${kind} store`, () => {
    async function world(opts: { fullAccess?: boolean; graceSeconds?: number; csApi?: 'token-helper' | 'core' } = {}): Promise<World> {
      // {} leaves act at once here; their grace is bridge-removal-e2e.test.ts's subject.
      return await worlds.start({ kind, leaveGraceSeconds: 0, ...opts });
    }

    /** Alice joins the call on DEVICEA and connects to the SFU room with a /sfu/get token. */
    async function aliceInCall(w: World, extra: Record<string, unknown> = {}) {
      const joinId = w.composed.hs.model.sendState(w.alice, w.roomId, CALL, stateKeyOf(w.alice, 'DEVICEA'), joinContent('DEVICEA', w.alice, extra));
      await w.pushed(joinId);
      const t = await w.sfuGet(w.alice, w.roomId, 'DEVICEA');
      expect(t.status).toBe(200);
      const client = await w.connect(String(t.json.jwt));
      return { joinId, client };
    }

    it('a member joining a call makes the SFU room exist, and their /sfu/get token then joins it', async () => {
      const w = await world();
      expect(await w.sfuRooms()).not.toContain(w.sfuRoom);
      const { client } = await aliceInCall(w);
      expect(await w.sfuRooms()).toContain(w.sfuRoom);
      expect(client.room.name).toBe(w.sfuRoom);
      await waitFor('alice in the SFU room', async () => (await w.sfuIdentities(w.sfuRoom)).includes(legacyLiveKitIdentity(w.alice, 'DEVICEA')));
    });

    for (const how of ['leave', 'kick', 'ban'] as const) {
      it(`disconnects the rtc-node participant (PARTICIPANT_REMOVED) within 1 s of the homeserver pushing their ${how}`, async () => {
        const w = await world();
        const { client } = await aliceInCall(w);
        const hs = w.composed.hs;
        const disconnected = client.waitForEvent('disconnected', undefined, 30_000);
        const eventId =
          how === 'leave'
            ? hs.model.sendState(w.alice, w.roomId, CALL, stateKeyOf(w.alice, 'DEVICEA'), {})
            : hs.model.setMembership(w.carol, w.roomId, w.alice, how === 'ban' ? 'ban' : 'leave', how);
        await w.pushed(eventId);
        const [reason] = await within(REMOVAL_BOUND_MS, disconnected, `disconnect after the pushed ${how}`);
        expect(reason).toBe(DisconnectReason.PARTICIPANT_REMOVED);
        expect(await w.sfuIdentities(w.sfuRoom)).not.toContain(legacyLiveKitIdentity(w.alice, 'DEVICEA'));
      });
    }

    it('disconnects the rtc-node participant (PARTICIPANT_REMOVED) within 1 s of their membership`s expiry', async () => {
      const w = await world();
      const createdTs = Date.now();
      const { client } = await aliceInCall(w, { created_ts: createdTs, expires: 4_000 });
      const disconnected = client.waitForEvent('disconnected', undefined, 30_000);
      const expiresAt = createdTs + 4_000;
      expect(Date.now()).toBeLessThan(expiresAt);
      const [reason] = await within(expiresAt + REMOVAL_BOUND_MS - Date.now(), disconnected, 'disconnect after the expiry');
      expect(reason).toBe(DisconnectReason.PARTICIPANT_REMOVED);
    });

    it('deletes the SFU room after the grace once the last member left; a rejoin inside the grace keeps it', async () => {
      const w = await world({ graceSeconds: 2 });
      const hs = w.composed.hs;
      const roomB = w.makeRoom();
      const sfuRoomB = liveKitRoomAlias(roomB, SLOT);
      const keyA = stateKeyOf(w.alice, 'DEVICEA');
      await w.pushed(hs.model.sendState(w.alice, w.roomId, CALL, keyA, joinContent('DEVICEA', w.alice)));
      await w.pushed(hs.model.sendState(w.alice, roomB, CALL, keyA, joinContent('DEVICEA', w.alice)));
      expect(await w.sfuRooms()).toEqual(expect.arrayContaining([w.sfuRoom, sfuRoomB]));

      // Both calls end, room A's first; alice rejoins A inside its grace.
      await w.pushed(hs.model.sendState(w.alice, w.roomId, CALL, keyA, {}));
      await w.pushed(hs.model.sendState(w.alice, roomB, CALL, keyA, {}));
      expect(await w.sfuRooms()).toEqual(expect.arrayContaining([w.sfuRoom, sfuRoomB]));
      await w.pushed(hs.model.sendState(w.alice, w.roomId, CALL, keyA, joinContent('DEVICEA', w.alice, { created_ts: Date.now() })));

      // B's grace (which ends after A's would have) deletes B; A is kept.
      await waitFor('room B deleted after its grace', async () => !(await w.sfuRooms()).includes(sfuRoomB), { timeoutMs: 10_000 });
      expect(await w.sfuRooms()).toContain(w.sfuRoom);
    });

    it('ignores a leave written by another user at the victim`s key: the victim stays connected', async () => {
      const w = await world();
      const hs = w.composed.hs;
      const { client: alice } = await aliceInCall(w);
      await w.pushed(hs.model.sendState(w.bob, w.roomId, CALL, stateKeyOf(w.bob, 'DEVICEB'), joinContent('DEVICEB', w.bob)));
      const tb = await w.sfuGet(w.bob, w.roomId, 'DEVICEB');
      const bob = await w.connect(String(tb.json.jwt));
      const aliceGone = alice.waitForEvent('disconnected', undefined, 30_000).then(() => 'disconnected');
      aliceGone.catch(() => undefined);
      const bobGone = bob.waitForEvent('disconnected', undefined, 30_000);

      // The forged leave, then bob's own leave in the same order: bob goes, alice stays.
      const forged = hs.model.sendState(w.bob, w.roomId, CALL, stateKeyOf(w.alice, 'DEVICEA'), {});
      const own = hs.model.sendState(w.bob, w.roomId, CALL, stateKeyOf(w.bob, 'DEVICEB'), {});
      await w.pushed(forged);
      await w.pushed(own);
      await within(REMOVAL_BOUND_MS, bobGone, 'bob removed');
      const ids = await w.sfuIdentities(w.sfuRoom);
      expect(ids).toContain(legacyLiveKitIdentity(w.alice, 'DEVICEA'));
      expect(ids).not.toContain(legacyLiveKitIdentity(w.bob, 'DEVICEB'));
      expect(await Promise.race([aliceGone, Promise.resolve('connected')])).toBe('connected');
    });

    it('a full-access /get_token creates the SFU room (auto_create off) and its participant joins it', async () => {
      const w = await world({ fullAccess: true });
      expect(await w.sfuRooms()).not.toContain(w.sfuRoom);
      const t = await w.getToken(w.alice, w.roomId, 'DEVICEA');
      expect(t.status).toBe(200);
      expect(await w.sfuRooms()).toContain(w.sfuRoom);
      const client = await w.connect(String(t.json.jwt));
      expect(client.room.name).toBe(w.sfuRoom);
      const identity = liveKitIdentityForMember(w.alice, 'DEVICEA', `${w.alice}:DEVICEA`);
      await waitFor('alice in the SFU room', async () => (await w.sfuIdentities(w.sfuRoom)).includes(identity));
    });

    it('sends the delegated delayed leave when our SFU`s webhook reports the participant`s disconnect', async () => {
      const w = await world({ fullAccess: true });
      const api = w.composed.tokenApi;
      const delayId = api.scheduleDelayedEvent({ roomId: w.roomId, delayMs: 2_000, userId: w.alice });
      const t = await w.getToken(w.alice, w.roomId, 'DEVICEA', { delay_id: delayId, delay_timeout: 2_000 });
      expect(t.status).toBe(200);
      const client = await w.connect(String(t.json.jwt));
      // Connected: the job keeps the delayed event alive (restart at 80 % of the timeout).
      await waitFor('delayed event restarted', () => api.actions().includes(`${delayId}:restart`), { timeoutMs: 5_000 });
      expect(api.actions()).not.toContain(`${delayId}:send`);
      await client.disconnect();
      await waitFor('delayed event sent after the disconnect', () => api.actions().includes(`${delayId}:send`), { timeoutMs: 5_000 });
    });
    it('keeps an Element-Call delayed leave alive on Synapse 1.132 through the authenticated {action} form, and sends it on disconnect', async () => {
      const w = await world({ fullAccess: true, csApi: 'core' });
      const hs = w.composed.hs;
      const key = stateKeyOf(w.alice, 'DEVICEA');
      const delayMs = 2_000;
      // Element Call: join, then schedule the leave as a delayed state event with alice's token.
      const statePath = `/_matrix/client/v3/rooms/${encodeURIComponent(w.roomId)}/state/${CALL}/${encodeURIComponent(key)}`;
      const put = async (query: string, body: unknown) => {
        const res = await fetch(`${hs.url}${statePath}${query}`, {
          method: 'PUT',
          headers: { Authorization: `Bearer ${w.accessToken(w.alice)}`, 'Content-Type': 'application/json' },
          body: JSON.stringify(body),
        });
        expect(res.status).toBe(200);
        return (await res.json()) as Record<string, string>;
      };
      await w.pushed((await put('', joinContent('DEVICEA', w.alice))).event_id!);
      const scheduledAt = Date.now();
      const delayId = (await put(`?org.matrix.msc4140.delay=${delayMs}`, {})).delay_id!;
      expect(hs.delayed.pendingIds()).toContain(delayId);

      const t = await w.getToken(w.alice, w.roomId, 'DEVICEA', { delay_id: delayId, delay_timeout: delayMs });
      expect(t.status).toBe(200);
      const client = await w.connect(String(t.json.jwt));

      const delayedCalls = () => w.coreRequests.filter((r) => r.method === 'POST' && r.path.includes(`/delayed_events/${delayId}`));
      const bodyRestarts = () =>
        delayedCalls().filter(
          (r) =>
            r.path.endsWith(`/delayed_events/${delayId}`) &&
            (r.body as { action?: string }).action === 'restart' &&
            r.authorization === `Bearer ${w.reg.as_token}` &&
            r.query.user_id === w.alice,
        );
      // Alive past its delay: the restarts keep pushing it back while alice is connected.
      await waitFor('two {action} restarts and the original delay long gone', () => bodyRestarts().length >= 2 && Date.now() > scheduledAt + 1.5 * delayMs, {
        timeoutMs: 10_000,
      });
      expect(hs.delayed.pendingIds()).toContain(delayId);
      expect(hs.model.stateEvent(w.roomId, CALL, key)?.content).toMatchObject({ device_id: 'DEVICEA' });
      // The path form was tried once (404 M_UNRECOGNIZED on 1.132); every later call went straight to the body form.
      expect(delayedCalls().filter((r) => r.path.endsWith('/restart') || r.path.endsWith('/send'))).toHaveLength(1);

      await client.disconnect();
      await waitFor('the delayed leave sent: alice`s membership is {}', () => Object.keys(hs.model.stateEvent(w.roomId, CALL, key)?.content ?? { x: 1 }).length === 0, {
        timeoutMs: 5_000,
      });
      const leave = hs.model.stateEvent(w.roomId, CALL, key)!;
      expect(leave.sender).toBe(w.alice);
      expect(hs.delayed.pendingIds()).not.toContain(delayId);
      expect(delayedCalls().some((r) => (r.body as { action?: string }).action === 'send' && r.query.user_id === w.alice)).toBe(true);
    });
  });
}
