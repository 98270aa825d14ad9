/**
 * Answers "is this user joined to this Matrix room?" from the `m.room.member` state the
 * appservice has seen pushed or read during reconcile, for the token service's membership check.
 * `undefined` means the bridge does not know (room or user never seen): the caller decides
 * whether to ask the homeserver.
 */
import type { BridgeStore } from '../store/store.ts';

export interface MembershipOracle {
  isJoined(roomId: string, userId: string): Promise<boolean | undefined>;
}

export function createMembershipOracle(deps: { store: BridgeStore }): MembershipOracle {
  return {
    async isJoined(roomId, userId) {
      const m = await deps.store.getRoomMember(roomId, userId);
      return m === undefined ? undefined : m === 'join';
    },
  };
}
