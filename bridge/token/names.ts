/**
 * The LiveKit names a Matrix call maps to, computed exactly as lk-jwt-service does so tokens from
 * either service address the same SFU room and participant: the room alias and the hashed
 * identity are unpadded standard base64 of SHA-256 over a compact JSON array, with Go's JSON
 * escaping of `<`, `>`, `&`, U+2028 and U+2029 (Go's encoder escapes them, `JSON.stringify`
 * does not). One function per branded id (STYLE.md §8).
 */
import { createHash } from 'node:crypto';

export type LiveKitRoomName = string & { readonly __brand: 'LiveKitRoomName' };
export type LiveKitIdentity = string & { readonly __brand: 'LiveKitIdentity' };
export type MatrixUserId = string & { readonly __brand: 'MatrixUserId' };

/** The slot `/sfu/get` (legacy) implies. */
export const LEGACY_SLOT_ID = 'm.call#ROOM';

/** Compact JSON of an array of strings, escaped the way Go's encoding/json does. */
export function goJsonArray(items: readonly string[]): string {
  return JSON.stringify(items).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Unpadded standard base64 of SHA-256 over the Go-compatible JSON of `items`. */
export function hashOfArray(items: readonly string[]): string {
  return createHash('sha256').update(goJsonArray(items), 'utf8').digest('base64').replace(/=+$/, '');
}

export function liveKitRoomAlias(roomId: string, slotId: string): LiveKitRoomName {
  return hashOfArray([roomId, slotId]) as LiveKitRoomName;
}

/** `/get_token`, `/delegate_delayed_leave` and AS line A: hash of (user, device, member id). */
export function liveKitIdentityForMember(userId: string, deviceId: string, memberId: string): LiveKitIdentity {
  return hashOfArray([userId, deviceId, memberId]) as LiveKitIdentity;
}

/** AS line B (`member_id` bodies): hash of (user, member id). */
export function liveKitIdentityForMemberId(userId: string, memberId: string): LiveKitIdentity {
  return hashOfArray([userId, memberId]) as LiveKitIdentity;
}

/** `/sfu/get`: the plain `<user>:<device>`, not hashed. */
export function legacyLiveKitIdentity(userId: string, deviceId: string): LiveKitIdentity {
  return `${userId}:${deviceId}` as LiveKitIdentity;
}

/** `@local:server` with a non-empty localpart and server; returns the server name or undefined. */
export function serverNameOfUserId(userId: string): string | undefined {
  if (!userId.startsWith('@')) return undefined;
  const i = userId.indexOf(':');
  if (i <= 1 || i === userId.length - 1) return undefined;
  return userId.slice(i + 1);
}
