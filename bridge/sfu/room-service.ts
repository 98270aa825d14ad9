/**
 * The bridge's one client of the SFU's RoomService API (Twirp, via livekit-server-sdk's
 * RoomServiceClient), so the bridge drives our SFU and a LiveKit cluster the same way. Both
 * halves use it: the token service creates rooms for full-access users and asks whether a
 * participant is present (delayed leave); the appservice's room lifecycle and reconcile create,
 * list and delete rooms and remove participants. The SFU runs with `room.auto_create: false`, so
 * rooms are created here, with no participant limit and the empty/departure timeouts the bridge
 * is built with: from its own deletion grace in appservice mode (`roomTimeoutsForGrace`, so the
 * SFU does not delete a room before the bridge's grace ends), lk-jwt-service's 300 s / 20 s
 * otherwise. Removal can revoke: `revoke_token_ts` (RoomParticipantIdentity field 3, which the
 * SDK's bundled @livekit/protocol 1.51 carries) makes the SFU refuse every token of that identity
 * issued before it. Twirp `not_found` answers are
 * results, not errors (removing someone already gone is success); everything else throws.
 * Consumers that need only part of it depend on a `Pick<SfuRoomService, ...>`.
 */
import { RoomServiceClient } from 'livekit-server-sdk';

export const ROOM_EMPTY_TIMEOUT_SECONDS = 300;
export const ROOM_DEPARTURE_TIMEOUT_SECONDS = 20;

export interface SfuRoomInfo {
  name: string;
  /** Epoch ms the SFU created the room (0 when it does not say). */
  createdAtMs: number;
  numParticipants: number;
}

export interface SfuParticipantInfo {
  identity: string;
  /** Epoch ms the participant joined (0 when unknown). */
  joinedAtMs: number;
}

export interface SfuRoomTimeouts {
  emptySeconds: number;
  departureSeconds: number;
}

export interface RemoveOptions {
  /** Epoch ms: every token of this identity issued at or before it is refused from now on. */
  revokeTokensIssuedBy?: number;
}

export interface SfuRoomService {
  /** Creates the room with the service's timeouts; creating an existing room is not an error. */
  createRoom(name: string): Promise<void>;
  deleteRoom(name: string): Promise<'deleted' | 'absent'>;
  listRooms(): Promise<SfuRoomInfo[]>;
  /** An absent room has no participants. */
  listParticipants(name: string): Promise<SfuParticipantInfo[]>;
  removeParticipant(name: string, identity: string, opts?: RemoveOptions): Promise<'removed' | 'absent'>;
  /** true present, false confirmed absent; throws on transport or other errors. */
  participantExists(room: string, identity: string): Promise<boolean>;
  /** UpdateParticipant with every permission false (no publish, subscribe, data or metadata). */
  revokePermissions(room: string, identity: string): Promise<'updated' | 'absent'>;
}

export interface SfuRoomServiceOptions {
  /** LIVEKIT_URL; ws(s):// is turned into http(s)://. */
  url: string;
  key: string;
  secret: string;
  /** Seconds per request (default 10). */
  requestTimeoutSeconds?: number;
  /** Timeouts of the rooms it creates (default lk-jwt-service's, 300 s / 20 s). */
  roomTimeouts?: SfuRoomTimeouts;
}

/**
 * Room timeouts for the bridge's deletion grace: the departure timeout (after the last
 * participant left) is the grace itself, so the SFU never closes a finished call's room before
 * the bridge's grace ends (LiveKit's 20 s default did); the empty timeout (nobody ever joined) is
 * the grace but at least lk-jwt-service's 300 s, so a room made for a call whose client is slow
 * to connect is not closed under it. 0 means "the SFU's default" on the wire, so a grace of 0
 * (the bridge deletes at once) asks for 1 s.
 */
export function roomTimeoutsForGrace(graceSeconds: number): SfuRoomTimeouts {
  const departureSeconds = Math.max(1, graceSeconds);
  return { emptySeconds: Math.max(departureSeconds, ROOM_EMPTY_TIMEOUT_SECONDS), departureSeconds };
}

/** LiveKit's revoke_token_ts (seconds; tokens with `iat` below it are refused) covering `ms`. */
export function revokeTokenTsOf(ms: number): bigint {
  return BigInt(Math.floor(ms / 1000) + 1);
}

/** Twirp `not_found` (or a bare 404) from the SFU. */
export function isNotFound(err: unknown): boolean {
  const e = err as { status?: unknown; code?: unknown } | null;
  return typeof e === 'object' && e !== null && (e.code === 'not_found' || e.status === 404);
}

export function httpUrlOf(url: string): string {
  return url.replace(/^ws(s?):\/\//, 'http$1://');
}

async function absentOnNotFound<T, A>(fn: () => Promise<T>, absent: A): Promise<T | A> {
  try {
    return await fn();
  } catch (err) {
    if (isNotFound(err)) return absent;
    throw err;
  }
}

export function createSfuRoomService(opts: SfuRoomServiceOptions): SfuRoomService {
  const client = new RoomServiceClient(httpUrlOf(opts.url), opts.key, opts.secret, {
    requestTimeout: opts.requestTimeoutSeconds ?? 10,
    // Region failover is for LiveKit Cloud; against one SFU it would only replay requests.
    failover: false,
  });
  const timeouts = opts.roomTimeouts ?? { emptySeconds: ROOM_EMPTY_TIMEOUT_SECONDS, departureSeconds: ROOM_DEPARTURE_TIMEOUT_SECONDS };
  return {
    async createRoom(name) {
      await client.createRoom({
        name,
        emptyTimeout: timeouts.emptySeconds,
        departureTimeout: timeouts.departureSeconds,
        maxParticipants: 0,
      });
    },
    deleteRoom: (name) => absentOnNotFound(async () => (await client.deleteRoom(name), 'deleted' as const), 'absent' as const),
    async listRooms() {
      const rooms = await client.listRooms();
      return rooms.map((r) => ({
        name: r.name,
        createdAtMs: Number(r.creationTimeMs || 0n) || Number(r.creationTime || 0n) * 1000,
        numParticipants: r.numParticipants,
      }));
    },
    async listParticipants(name) {
      const ps = await absentOnNotFound(() => client.listParticipants(name), []);
      return ps.map((p) => ({
        identity: p.identity,
        joinedAtMs: Number(p.joinedAtMs || 0n) || Number(p.joinedAt || 0n) * 1000,
      }));
    },
    removeParticipant: (name, identity, removeOpts = {}) =>
      absentOnNotFound(async () => {
        const by = removeOpts.revokeTokensIssuedBy;
        await client.removeParticipant(name, identity, by === undefined ? undefined : { revokeTokenTs: revokeTokenTsOf(by) });
        return 'removed' as const;
      }, 'absent' as const),
    revokePermissions: (room, identity) =>
      absentOnNotFound(async () => {
        await client.updateParticipant(room, identity, {
          permission: { canSubscribe: false, canPublish: false, canPublishData: false, canPublishSources: [], canUpdateMetadata: false, canSubscribeMetrics: false },
        });
        return 'updated' as const;
      }, 'absent' as const),
    participantExists: (room, identity) => absentOnNotFound(async () => (await client.getParticipant(room, identity), true), false),
  };
}
