/**
 * Element Call's `matrix_2_0` mode end to end: matrix-js-sdk's own MatrixClient and
 * StickyEventMembershipManager send sticky `org.matrix.msc4143.rtc.member` events to the fake
 * homeserver with MSC4354 on (as Synapse >= 1.148 with `msc4354_enabled`), which pushes them to
 * the whole bridge process like any timeline event. The sticky join makes the SFU room exist; an
 * @livekit/rtc-node participant with the identity js-sdk computes for the member (the
 * `/get_token` hash of user, device and member id) joins it with a bridge token; a reconcile (which
 * reads room state, where sticky events are not) leaves it alone; hanging up sends js-sdk's
 * delayed sticky leave and the bridge removes the participant (PARTICIPANT_REMOVED) within 1 s of
 * the push. A sticky join that is never refreshed ends when its sticky duration passes. With
 * the memory and the Redis store.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { DisconnectReason } from '@livekit/rtc-node';
import { liveKitIdentityForMember } from '../../bridge/token/names.ts';
import { generateStickyContents, matrixClientFor, RTC_MEMBER, startStickyMember, type StickyMember } from '../support/matrixrtc-sticky.ts';
import { waitFor } from '../support/wait.ts';
import { within, worldPerTest, type StoreKind } from './bridge-e2e-world.ts';

const worlds = worldPerTest();
let member: StickyMember | undefined;
// Registered after worldPerTest's, so it runs first (vitest runs after-hooks as a stack).
afterEach(async () => {
  await member?.stop();
  member = undefined;
});

const REMOVAL_BOUND_MS = 1000;

for (const kind of ['memory', 'redis'] as StoreKind[]) {
  describe(`bridge end to end with sticky rtc.member events (MSC4354) and the ${kind} store`, () => {
    it('a js-sdk sticky join creates the SFU room, the member`s rtc-node participant joins, reconcile keeps it, the sticky leave removes it', async () => {
      // Leave grace 0: this is about sticky events reaching the SFU, not the grace (bridge-removal-e2e).
      const w = await worlds.start({ kind, matrixRtc: { msc4354: true }, leaveGraceSeconds: 0 });
      const hs = w.composed.hs;
      expect(await w.sfuRooms()).not.toContain(w.sfuRoom);
      const client = matrixClientFor(hs.url, w.alice, 'DEVICEA', w.accessToken(w.alice));
      member = startStickyMember({ client, roomId: w.roomId });
      member.join();
      const ofMember = () => [...hs.model.room(w.roomId).events.values()].filter((e) => e.type === RTC_MEMBER && e.content.msc4354_sticky_key === member!.memberId);
      await waitFor('sticky join persisted', () => ofMember().length === 1, { timeoutMs: 5_000 });
      await w.pushed(ofMember()[0]!.event_id);
      expect(await w.sfuRooms()).toContain(w.sfuRoom);

      // Element Call in matrix_2_0 asks /get_token with the member id it put in the event.
      const t = await w.getToken(w.alice, w.roomId, 'DEVICEA', { member: { id: member.memberId, claimed_user_id: w.alice, claimed_device_id: 'DEVICEA' } });
      expect(t.status).toBe(200);
      const rtc = await w.connect(String(t.json.jwt));
      expect(rtc.room.name).toBe(w.sfuRoom);
      const identity = liveKitIdentityForMember(w.alice, 'DEVICEA', member.memberId);
      await waitFor('alice in the SFU room', async () => (await w.sfuIdentities(w.sfuRoom)).includes(identity));

      // Sticky events are not room state: a reconcile must not take this membership for drift.
      const report = await w.bridge.appservice!.reconciler.run();
      expect(report.dropped).toBe(0);
      expect(await w.sfuIdentities(w.sfuRoom)).toContain(identity);

      const disconnected = rtc.waitForEvent('disconnected', undefined, 30_000);
      expect(await member.leave()).toBe(true);
      await waitFor('sticky leave persisted', () => ofMember().length === 2, { timeoutMs: 5_000 });
      const leave = ofMember()[1]!;
      expect(leave.content.member).toBeUndefined();
      await w.pushed(leave.event_id);
      const [reason] = await within(REMOVAL_BOUND_MS, disconnected, 'disconnect after the pushed sticky leave');
      expect(reason).toBe(DisconnectReason.PARTICIPANT_REMOVED);
    });

    it('a sticky join never refreshed ends when its sticky duration passes: the participant is removed', async () => {
      const w = await worlds.start({ kind, matrixRtc: { msc4354: true } });
      const hs = w.composed.hs;
      const js = await generateStickyContents(w.alice, 'DEVICEA', w.roomId);
      // js-sdk always asks for 1 h; the same content sent with a 3 s duration ends in 3 s.
      const durationMs = 3_000;
      const res = await fetch(`${hs.url}/_matrix/client/v3/rooms/${encodeURIComponent(w.roomId)}/send/${RTC_MEMBER}/t1?org.matrix.msc4354.sticky_duration_ms=${durationMs}`, {
        method: 'PUT',
        headers: { Authorization: `Bearer ${w.accessToken(w.alice)}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(js.join.content),
      });
      expect(res.status).toBe(200);
      const eventId = ((await res.json()) as { event_id: string }).event_id;
      const sentAt = hs.model.room(w.roomId).events.get(eventId)!.origin_server_ts;
      await w.pushed(eventId);
      const t = await w.getToken(w.alice, w.roomId, 'DEVICEA', { member: { id: js.memberId, claimed_user_id: w.alice, claimed_device_id: 'DEVICEA' } });
      const rtc = await w.connect(String(t.json.jwt));
      const disconnected = rtc.waitForEvent('disconnected', undefined, 30_000);
      expect(Date.now()).toBeLessThan(sentAt + durationMs);
      const [reason] = await within(sentAt + durationMs + REMOVAL_BOUND_MS - Date.now(), disconnected, 'disconnect after the sticky duration');
      expect(reason).toBe(DisconnectReason.PARTICIPANT_REMOVED);
      expect(Date.now()).toBeGreaterThanOrEqual(sentAt + durationMs - 50);
    });
  });
}
