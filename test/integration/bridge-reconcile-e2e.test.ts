/**
 * Issue 6's reconcile "done when" against our real SFU (not a recording stand-in): a bridge
 * started while calls are already running, that never saw their events (the registration has no
 * url, so the fake homeserver pushes nothing), reaches the right state through its start-up
 * reconcile alone. Before it starts: alice is in a call in room A (no SFU room yet); in room B
 * alice's call runs (her client connected), bob's membership ended, yet bob's @livekit/rtc-node participant is still
 * connected to B's SFU room; and an SFU room no call owns, created through livekit-server-sdk's
 * RoomServiceClient. After: A's SFU room exists, bob is removed (PARTICIPANT_REMOVED) and the
 * orphan room is deleted after the grace (ListRooms). Room state is read as a joined local user
 * (`?user_id=`), never as the bot, whose `/state` the fake answers 403 as Synapse does. With the
 * memory and the Redis store.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DisconnectReason } from '@livekit/rtc-node';
import { AccessToken } from 'livekit-server-sdk';
import { legacyLiveKitIdentity, liveKitRoomAlias } from '../../bridge/token/names.ts';
import { TEST_API_KEY, TEST_API_SECRET } from '../support/sfu-harness.ts';
import { waitFor } from '../support/wait.ts';
import { CALL, joinContent, SLOT, worldPerTest, stateKeyOf, type StoreKind } from './bridge-e2e-world.ts';

const worlds = worldPerTest();

const GRACE_SECONDS = 2;

async function sfuToken(identity: string, room: string): Promise<string> {
  const at = new AccessToken(TEST_API_KEY, TEST_API_SECRET, { identity, ttl: '10m' });
  at.addGrant({ room, roomJoin: true, canPublish: true, canSubscribe: true });
  return await at.toJwt();
}

for (const kind of ['memory', 'redis'] as StoreKind[]) {
  describe(`bridge reconcile on our SFU with the ${kind} store`, () => {
    it('started while calls run, reaches the right state through reconcile (reading room state as a joined user, never as the bot Synapse refuses): creates the call`s room, removes a stale participant, deletes an orphan room after the grace', async () => {
      const orphan = `orphan-${randomUUID()}`;
      let sfuRoomB = '';
      let staleIdentity = '';
      let staleGone: Promise<[DisconnectReason?]> | undefined;
      let bridgeStartedAt = 0;

      const w = await worlds.start({
        kind,
        graceSeconds: GRACE_SECONDS,
        pushes: false,
        async beforeBridge(pre) {
          const m = pre.composed.hs.model;
          // Room A: alice's call runs; its SFU room does not exist yet.
          m.sendState(pre.alice, pre.roomId, CALL, stateKeyOf(pre.alice, 'DEVICEA'), joinContent('DEVICEA', pre.alice));
          // Room B: alice's call runs; bob joined and left it.
          const roomB = pre.makeRoom();
          sfuRoomB = liveKitRoomAlias(roomB, SLOT);
          m.sendState(pre.alice, roomB, CALL, stateKeyOf(pre.alice, 'DEVICEA'), joinContent('DEVICEA', pre.alice));
          m.sendState(pre.bob, roomB, CALL, stateKeyOf(pre.bob, 'DEVICEB'), joinContent('DEVICEB', pre.bob));
          m.sendState(pre.bob, roomB, CALL, stateKeyOf(pre.bob, 'DEVICEB'), {});
          await pre.roomService.createRoom({ name: sfuRoomB });
          await pre.roomService.createRoom({ name: orphan });
          // alice's client is in B's call (so B is not an empty room the SFU closes after the grace).
          await pre.connect(await sfuToken(legacyLiveKitIdentity(pre.alice, 'DEVICEA'), sfuRoomB));
          // bob's client is still in B's SFU room, longer than the grace (younger ones are spared).
          staleIdentity = legacyLiveKitIdentity(pre.bob, 'DEVICEB');
          const bob = await pre.connect(await sfuToken(staleIdentity, sfuRoomB));
          staleGone = bob.waitForEvent('disconnected', undefined, 60_000);
          staleGone.catch(() => undefined);
          await waitFor(
            'bob connected for longer than the grace',
            async () => {
              const p = (await pre.roomService.listParticipants(sfuRoomB)).find((x) => x.identity === staleIdentity);
              return p !== undefined && Date.now() - Number(p.joinedAt) * 1000 > GRACE_SECONDS * 1000 + 1000;
            },
            { timeoutMs: 10_000 },
          );
          bridgeStartedAt = Date.now();
        },
      });
      // Nothing was pushed: all the bridge knows comes from reconcile.
      expect(w.composed.hs.pusher.attempts).toEqual([]);
      // It read both rooms' state masquerading as a joined local user; never as the bot, which is
      // in no room (Synapse answers its /state 403 and logs it).
      const stateReads = w.coreRequests.filter((r) => r.method === 'GET' && /\/rooms\/[^/]+\/state$/.test(r.path));
      expect(stateReads.length).toBeGreaterThanOrEqual(2);
      expect(stateReads.filter((r) => typeof r.query.user_id !== 'string')).toEqual([]);

      const rooms = await w.sfuRooms();
      expect(rooms).toEqual(expect.arrayContaining([w.sfuRoom, sfuRoomB]));
      const [reason] = await staleGone!;
      expect(reason).toBe(DisconnectReason.PARTICIPANT_REMOVED);
      expect(await w.sfuIdentities(sfuRoomB)).not.toContain(staleIdentity);

      await waitFor('orphan room deleted', async () => !(await w.sfuRooms()).includes(orphan), { timeoutMs: 15_000 });
      expect(Date.now() - bridgeStartedAt).toBeGreaterThanOrEqual(GRACE_SECONDS * 1000);
      // The rooms of running calls are kept.
      expect(await w.sfuRooms()).toEqual(expect.arrayContaining([w.sfuRoom, sfuRoomB]));
      expect(await w.bridge.appservice!.oracle.isJoined(w.roomId, w.alice)).toBe(true);
    });
  });
}
