/**
 * Tokens revoked by RemoveParticipant's `revoke_token_ts`: a participant identity in a room may
 * not join with a token issued before that time. Bounded: an entry is forgotten once every
 * token it could refuse has expired (tokens issued before the revocation and valid for at most
 * `maxTokenLifetimeMs`), and at most `maxEntries` are kept (the oldest revocation goes first),
 * so a stream of RemoveParticipant calls cannot grow the node without bound.
 * Lifecycle: one per room manager; `revoke` from RoomService, `isRevoked` at join.
 */
import type { Clock } from '../../common/clock.ts';

/** Longer than any access token we or livekit-server-sdk mint by default (6 h). */
export const MAX_TOKEN_LIFETIME_MS = 24 * 3_600_000;
export const MAX_REVOCATIONS = 100_000;

export interface Revocations {
  /** `revokeTokenTs` in seconds since the epoch. */
  revoke(room: string, identity: string, revokeTokenTs: bigint): void;
  /** Whether a token issued at `issuedAt` (s) is refused for this identity in this room. */
  isRevoked(room: string, identity: string, issuedAt: number): boolean;
  readonly size: number;
}

const keyOf = (room: string, identity: string) => `${room}\u0000${identity}`;

export function createRevocations(deps: { clock: Clock; maxTokenLifetimeMs?: number; maxEntries?: number }): Revocations {
  const lifetimeMs = deps.maxTokenLifetimeMs ?? MAX_TOKEN_LIFETIME_MS;
  const maxEntries = deps.maxEntries ?? MAX_REVOCATIONS;
  /** room \0 identity → revokeTokenTs (s); Map order = order of the latest revocation. */
  const entries = new Map<string, bigint>();
  const expired = (ts: bigint) => Number(ts) * 1000 + lifetimeMs < deps.clock.now();

  function sweep(): void {
    for (const [key, ts] of entries) {
      if (!expired(ts) && entries.size <= maxEntries) break;
      entries.delete(key);
    }
  }

  return {
    revoke(room, identity, revokeTokenTs) {
      const key = keyOf(room, identity);
      const before = entries.get(key);
      entries.delete(key);
      entries.set(key, before !== undefined && before > revokeTokenTs ? before : revokeTokenTs);
      sweep();
    },
    isRevoked(room, identity, issuedAt) {
      const ts = entries.get(keyOf(room, identity));
      if (ts === undefined) return false;
      if (expired(ts)) {
        entries.delete(keyOf(room, identity));
        return false;
      }
      return BigInt(issuedAt) < ts;
    },
    get size() {
      return entries.size;
    },
  };
}
