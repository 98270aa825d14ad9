/**
 * The membership monitor end to end (lk-jwt-service's `membership_check.rs` scenario at a 1 s
 * interval): the whole bridge (appservice + token service) on our real SFU and the fake
 * homeserver, whose registration has no url, so the appservice never hears of the leave (a lost
 * push). alice and bob get tokens from `/get_token` and connect with @livekit/rtc-node; alice
 * leaves the Matrix room; within one interval the monitor removes her (PARTICIPANT_REMOVED),
 * bob stays, and alice's old token no longer gets in (revoke_token_ts). With the memory and the
 * Redis store.
 */
import { describe, expect, it } from 'vitest';
import { DisconnectReason } from '@livekit/rtc-node';
import { liveKitIdentityForMember } from '../../bridge/token/names.ts';
import { waitFor } from '../support/wait.ts';
import { worldPerTest, type StoreKind } from './bridge-e2e-world.ts';

const INTERVAL_SECONDS = 1;
/** One interval, plus the sweep's own requests and the leave reaching the client on a loaded machine. */
const REMOVAL_BOUND_MS = INTERVAL_SECONDS * 1000 + 1500;

const worlds = worldPerTest();

for (const kind of ['memory', 'redis'] as StoreKind[]) {
  describe(`membership monitor on our SFU with the ${kind} store`, () => {
    it('removes within one interval a connected user who left the Matrix room while the push to the appservice was lost, and her old token cannot rejoin', async () => {
      const w = await worlds.start({
        kind,
        fullAccess: true,
        pushes: false,
        env: { LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS: String(INTERVAL_SECONDS) },
      });
      const a = await w.getToken(w.alice, w.roomId, 'ADEV');
      const b = await w.getToken(w.bob, w.roomId, 'BDEV');
      expect([a.status, b.status]).toEqual([200, 200]);
      const aliceId = liveKitIdentityForMember(w.alice, 'ADEV', `${w.alice}:ADEV`);
      const bobId = liveKitIdentityForMember(w.bob, 'BDEV', `${w.bob}:BDEV`);
      const alice = await w.connect(String(a.json.jwt));
      await w.connect(String(b.json.jwt));
      await waitFor('both on the SFU', async () => (await w.sfuIdentities(w.sfuRoom)).length === 2);
      // A sweep or two with both joined: nobody is removed.
      await new Promise((r) => setTimeout(r, INTERVAL_SECONDS * 1500));
      expect((await w.sfuIdentities(w.sfuRoom)).toSorted()).toEqual([aliceId, bobId].toSorted());

      const gone = alice.waitForEvent('disconnected', undefined, 15_000);
      const leftAt = Date.now();
      w.composed.hs.model.setMembership(w.alice, w.roomId, w.alice, 'leave');
      const [reason] = await gone;
      expect(Date.now() - leftAt).toBeLessThan(REMOVAL_BOUND_MS);
      expect(reason).toBe(DisconnectReason.PARTICIPANT_REMOVED);
      expect(w.composed.hs.pusher.attempts).toEqual([]); // the appservice was told nothing
      expect(await w.sfuIdentities(w.sfuRoom)).toEqual([bobId]);

      await expect(w.connect(String(a.json.jwt))).rejects.toThrow();
      expect(await w.sfuIdentities(w.sfuRoom)).toEqual([bobId]);
    });
  });
}
