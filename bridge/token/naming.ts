/**
 * The names the token service hands out and the bridge must reproduce: the SFU room of a Matrix
 * room + slot, and the participant identity of a device, exactly as element-hq/lk-jwt-service
 * computes them (`LiveKitRoomAliasFor`, `LiveKitIdentityFor`): unpadded standard base64 of the
 * SHA-256 of a compact JSON array. `/sfu/get` identities are the plain `<mxid>:<device>`.
 * One function per name; everything else imports these.
 */
import { createHash } from 'node:crypto';

/** Name of an SFU (LiveKit) room. */
export type RoomName = string & { readonly __brand: 'RoomName' };
/** A LiveKit participant identity (the JWT `sub`). */
export type ParticipantIdentity = string & { readonly __brand: 'ParticipantIdentity' };

/** The default call slot of a room, used by `/sfu/get` and session-state memberships. */
export const DEFAULT_SLOT_ID = 'm.call#ROOM';

/** Go's encoding/json escapes <, > and & inside strings; JSON.stringify does not. */
function goJson(values: string[]): string {
  return JSON.stringify(values)
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026');
}

function hashOf(values: string[]): string {
  return createHash('sha256').update(goJson(values)).digest('base64').replace(/=+$/, '');
}

/** The SFU room for a Matrix room and call slot. */
export function livekitRoomAlias(roomId: string, slotId: string = DEFAULT_SLOT_ID): RoomName {
  return hashOf([roomId, slotId]) as RoomName;
}

/** Identity issued by `/get_token` (and AS line A) to one member of a call. */
export function livekitHashedIdentity(userId: string, deviceId: string, memberId: string): ParticipantIdentity {
  return hashOf([userId, deviceId, memberId]) as ParticipantIdentity;
}

/** Identity issued by AS line B (`member_id` form). */
export function livekitMemberIdIdentity(userId: string, memberId: string): ParticipantIdentity {
  return hashOf([userId, memberId]) as ParticipantIdentity;
}

/** Identity issued by the legacy `/sfu/get`: plain `<mxid>:<device_id>`. */
export function livekitLegacyIdentity(userId: string, deviceId: string): ParticipantIdentity {
  return `${userId}:${deviceId}` as ParticipantIdentity;
}

/** The mxid inside a legacy identity, or undefined for hashed identities. */
export function userOfLegacyIdentity(identity: string): string | undefined {
  const m = /^(@[^:]+:.+):([^:]+)$/.exec(identity);
  return m ? m[1] : undefined;
}
