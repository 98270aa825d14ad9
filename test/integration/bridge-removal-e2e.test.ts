/**
 * Removal that matches intent, end to end: the whole bridge process (createBridge) driven by the
 * fake homeserver's pushes, our real SFU with `room.auto_create: false`, and @livekit/rtc-node
 * participants holding tokens from the bridge's own `/sfu/get`. Losing the room (kick, ban,
 * leaving it) removes the participant within 1 s with one RemoveParticipant (counted at the SFU)
 * and revokes, so the participant's still-valid token cannot rejoin (also a participant of that
 * user that never announced a call membership). A plain `{}` call leave
 * waits the leave grace counted from its origin_server_ts: the same member's membership arriving
 * meanwhile (Element Call's delayed leave firing, then its membership re-sent 5 s later) keeps the
 * participant, with no removal and no participant_left at the SFU; otherwise the participant goes
 * once the grace ends, and a leave delivered after its grace (downtime) acts at once. The SFU room
 * is created with a departure timeout equal to the bridge's deletion grace, so a 30 s grace
 * keeps it 25 s after the call ended (the homeserver, the bridge and the SFU share one manual
 * clock there). With the memory and the Redis store.
 */
import { describe, expect, it } from 'vitest';
import { DisconnectReason } from '@livekit/rtc-node';
import { createManualClock, type ManualClock } from '../../common/clock.ts';
import { legacyLiveKitIdentity, liveKitRoomAlias } from '../../bridge/token/names.ts';
import { connectRtcNode } from '../support/rtc-node.ts';
import { waitFor } from '../support/wait.ts';
import { CALL, joinContent, SLOT, worldPerTest, stateKeyOf, within, type StoreKind, type World, type WorldOptions } from './bridge-e2e-world.ts';

const worlds = worldPerTest();

const REMOVAL_BOUND_MS = 1000;
/** The bridge's default leave grace (bridge.yaml `leave_grace_seconds`). */
const LEAVE_GRACE_MS = 10_000;

/** RemoveParticipant (or another RoomService method) requests the SFU received, any outcome. */
async function twirpCalls(w: World, method: string): Promise<number> {
  const m = await w.sfu.sfu.metrics.getSingleMetric('livekit_twirp_request_status')!.get();
  return m.values.filter((v) => v.labels.method === method).reduce((n, v) => n + v.value, 0);
}

/** participant_left / participant_connection_aborted events of the SFU from now on. */
function sfuLeaves(w: World): string[] {
  const seen: string[] = [];
  w.sfu.sfu.rooms.onEvent((e) => {
    if (e.type === 'participant_left' || e.type === 'participant_connection_aborted') seen.push(e.type);
  });
  return seen;
}

async function leaveGraceOutcomes(w: World): Promise<Record<string, number>> {
  const m = await w.bridge.appservice!.metrics.leaveGrace.get();
  return Object.fromEntries(m.values.map((v) => [String(v.labels.outcome), v.value]));
}

/** Alice joins the call on DEVICEA and connects to the SFU room with a /sfu/get token. */
async function aliceInCall(w: World, extra: Record<string, unknown> = {}) {
  const joinId = w.composed.hs.model.sendState(w.alice, w.roomId, CALL, stateKeyOf(w.alice, 'DEVICEA'), joinContent('DEVICEA', w.alice, extra));
  await w.pushed(joinId);
  const t = await w.sfuGet(w.alice, w.roomId, 'DEVICEA');
  expect(t.status).toBe(200);
  const jwt = String(t.json.jwt);
  const client = await w.connect(jwt);
  await waitFor('alice in the SFU room', async () => (await w.sfuIdentities(w.sfuRoom)).includes(legacyLiveKitIdentity(w.alice, 'DEVICEA')));
  return { joinId, client, jwt };
}

for (const kind of ['memory', 'redis'] as StoreKind[]) {
  describe(`removal on our SFU with the ${kind} store`, () => {
    async function world(opts: Omit<WorldOptions, 'kind'> = {}): Promise<World> {
      return await worlds.start({ kind, ...opts });
    }

    for (const how of ['kick', 'ban', 'room leave'] as const) {
      it(`on a ${how}: removes the participant within 1 s with one RemoveParticipant, and its still-valid token cannot rejoin`, async () => {
        const w = await world();
        const { client, jwt } = await aliceInCall(w);
        const hs = w.composed.hs;
        const disconnected = client.waitForEvent('disconnected', undefined, 30_000);
        const eventId =
          how === 'room leave'
            ? hs.model.setMembership(w.alice, w.roomId, w.alice, 'leave')
            : hs.model.setMembership(w.carol, w.roomId, w.alice, how === 'ban' ? 'ban' : 'leave', how);
        await w.pushed(eventId);
        const [reason] = await within(REMOVAL_BOUND_MS, disconnected, `disconnect after the pushed ${how}`);
        expect(reason).toBe(DisconnectReason.PARTICIPANT_REMOVED);
        // One identity was present (the /sfu/get one): one RemoveParticipant, after one ListParticipants.
        expect(await twirpCalls(w, 'RemoveParticipant')).toBe(1);
        // The room lives on (its grace) and the token is valid for an hour, yet it is refused.
        expect(await w.sfuRooms()).toContain(w.sfuRoom);
        await expect(connectRtcNode(w.sfu.wsUrl, jwt)).rejects.toThrow();
        expect(await w.sfuIdentities(w.sfuRoom)).not.toContain(legacyLiveKitIdentity(w.alice, 'DEVICEA'));
      });
    }

    it('on a kick: also removes and revokes a participant of that user who never announced a call membership', async () => {
      const w = await world();
      await aliceInCall(w);
      // bob takes a token and connects, without a call membership.
      const t = await w.sfuGet(w.bob, w.roomId, 'DEVICEB');
      expect(t.status).toBe(200);
      const bobJwt = String(t.json.jwt);
      const bob = await w.connect(bobJwt);
      const disconnected = bob.waitForEvent('disconnected', undefined, 30_000);
      await w.pushed(w.composed.hs.model.setMembership(w.carol, w.roomId, w.bob, 'leave', 'kick'));
      const [reason] = await within(REMOVAL_BOUND_MS, disconnected, 'bob removed after his kick');
      expect(reason).toBe(DisconnectReason.PARTICIPANT_REMOVED);
      await expect(connectRtcNode(w.sfu.wsUrl, bobJwt)).rejects.toThrow();
      expect(await w.sfuIdentities(w.sfuRoom)).toEqual([legacyLiveKitIdentity(w.alice, 'DEVICEA')]);
    });

    it('keeps the participant when Element Call re-sends its membership 5 s after its delayed {} leave fired (inside the grace): no removal, no participant_left', async () => {
      const clock = createManualClock(Date.now());
      const w = await world({ clock });
      const hs = w.composed.hs;
      const key = stateKeyOf(w.alice, 'DEVICEA');
      const { client } = await aliceInCall(w, { expires: 180_000_000 });
      const left = sfuLeaves(w);
      let disconnected = false;
      client.room.on('disconnected', () => (disconnected = true));

      // Element Call's delayed leave (18 s), whose restarts did not reach Synapse in time: it fires.
      const statePath = `/_matrix/client/v3/rooms/${encodeURIComponent(w.roomId)}/state/${CALL}/${encodeURIComponent(key)}`;
      const res = await fetch(`${hs.url}${statePath}?org.matrix.msc4140.delay=18000`, {
        method: 'PUT',
        headers: { Authorization: `Bearer ${w.accessToken(w.alice)}`, 'Content-Type': 'application/json' },
        body: '{}',
      });
      expect(res.status).toBe(200);
      clock.advance(18_000);
      const leave = hs.model.stateEvent(w.roomId, CALL, key)!;
      expect(leave.content).toEqual({});
      await w.pushed(leave.event_id);

      // 5 s later Element Call re-sends its membership; then well past the leave's grace.
      clock.advance(5_000);
      await w.pushed(hs.model.sendState(w.alice, w.roomId, CALL, key, joinContent('DEVICEA', w.alice, { expires: 180_000_000 })));
      clock.advance(LEAVE_GRACE_MS + 5_000);
      await w.bridge.appservice!.tracker.queue.idle();

      expect(await twirpCalls(w, 'RemoveParticipant')).toBe(0);
      expect(left).toEqual([]);
      expect(disconnected).toBe(false);
      expect(await w.sfuIdentities(w.sfuRoom)).toContain(legacyLiveKitIdentity(w.alice, 'DEVICEA'));
      expect(await leaveGraceOutcomes(w)).toMatchObject({ waiting: 1, cancelled: 1 });
    });

    it('removes the participant once the grace of a {} leave ends, and not before', async () => {
      const clock = createManualClock(Date.now());
      const w = await world({ clock });
      const hs = w.composed.hs;
      const { client } = await aliceInCall(w);
      const left = sfuLeaves(w);
      const disconnected = client.waitForEvent('disconnected', undefined, 30_000);
      await w.pushed(hs.model.sendState(w.alice, w.roomId, CALL, stateKeyOf(w.alice, 'DEVICEA'), {}));
      clock.advance(LEAVE_GRACE_MS - 1_000);
      await w.bridge.appservice!.tracker.queue.idle();
      expect(await w.sfuIdentities(w.sfuRoom)).toContain(legacyLiveKitIdentity(w.alice, 'DEVICEA'));
      expect(left).toEqual([]);

      clock.advance(1_100);
      const [reason] = await within(REMOVAL_BOUND_MS, disconnected, 'disconnect once the grace ended');
      expect(reason).toBe(DisconnectReason.PARTICIPANT_REMOVED);
      expect(await twirpCalls(w, 'RemoveParticipant')).toBe(1);
      expect(await leaveGraceOutcomes(w)).toMatchObject({ waiting: 1, removed: 1 });
    });

    it('removes at once a {} leave the homeserver delivers after its grace (caught up after downtime)', async () => {
      const clock = createManualClock(Date.now());
      const w = await world({ clock });
      const { client } = await aliceInCall(w);
      const disconnected = client.waitForEvent('disconnected', undefined, 30_000);
      // The bridge was unreachable for a minute; the leave happened 20 s ago. Synapse's catch-up
      // rebuilds it from the database: no prev_content, `replaces_state` only (fixture flow 11).
      clock.advance(60_000);
      const join = w.composed.hs.model.stateEvent(w.roomId, CALL, stateKeyOf(w.alice, 'DEVICEA'))!;
      const ts = clock.now() - 20_000;
      const event = {
        age: 20_000,
        content: {},
        event_id: '$late-leave',
        origin_server_ts: ts,
        replaces_state: join.event_id,
        room_id: w.roomId,
        sender: w.alice,
        state_key: stateKeyOf(w.alice, 'DEVICEA'),
        type: CALL,
        unsigned: { age: 20_000, replaces_state: join.event_id },
        user_id: w.alice,
      };
      const res = await fetch(`${w.bridgeUrl}/_matrix/app/v1/transactions/late-1`, {
        method: 'PUT',
        headers: { Authorization: `Bearer ${w.reg.hs_token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ events: [event] }),
      });
      expect(res.status).toBe(200);
      const [reason] = await within(REMOVAL_BOUND_MS, disconnected, 'disconnect after the late leave');
      expect(reason).toBe(DisconnectReason.PARTICIPANT_REMOVED);
      expect(await leaveGraceOutcomes(w)).toMatchObject({ late: 1 });
    });
  });
}

describe('one grace: the SFU room lives exactly the bridge`s room_delete_grace_seconds', () => {
  it('creates SFU rooms (lifecycle and full-access /get_token) with departure timeout = the 30 s grace; the room still exists 25 s after the call ended and is gone after 30 s', async () => {
    // One clock for the homeserver, the bridge and the SFU (its room close timer).
    const clock: ManualClock = createManualClock(Date.now());
    const w = await worlds.start({ kind: 'memory', clock, sfuOnClock: true, graceSeconds: 30, leaveGraceSeconds: 0, fullAccess: true });
    const { client } = await aliceInCall(w);
    // Departure timeout = the grace; empty timeout (nobody ever joined) = the grace, at least 300 s.
    const info = (await w.roomService.listRooms([w.sfuRoom]))[0]!;
    expect([info.emptyTimeout, info.departureTimeout]).toEqual([300, 30]);
    // The token service creates rooms the same way.
    const roomB = w.makeRoom();
    expect((await w.getToken(w.bob, roomB, 'DEVICEB')).status).toBe(200);
    const infoB = (await w.roomService.listRooms([liveKitRoomAlias(roomB, SLOT)]))[0]!;
    expect([infoB.emptyTimeout, infoB.departureTimeout]).toEqual([300, 30]);

    // The call ends: alice's leave removes her at once (leave grace 0 here).
    const disconnected = client.waitForEvent('disconnected', undefined, 30_000);
    await w.pushed(w.composed.hs.model.sendState(w.alice, w.roomId, CALL, stateKeyOf(w.alice, 'DEVICEA'), {}));
    await within(REMOVAL_BOUND_MS, disconnected, 'alice removed');
    await waitFor('the SFU room is empty', async () => (await w.sfuIdentities(w.sfuRoom)).length === 0);

    clock.advance(25_000);
    await w.bridge.appservice!.tracker.queue.idle();
    expect(await w.sfuRooms()).toContain(w.sfuRoom);
    clock.advance(5_100);
    await waitFor('the SFU room deleted after the 30 s grace', async () => !(await w.sfuRooms()).includes(w.sfuRoom));
  });
});
