/**
 * The token service's view of the SFU's RoomService: create a room for full-access users
 * (empty timeout 300 s, departure timeout 20 s, no participant limit; the SFU runs with
 * `room.auto_create: false`) and ask whether a participant is present (the delayed-leave
 * poller; Twirp `not_found` means absent). Implemented with livekit-server-sdk's
 * RoomServiceClient against `LIVEKIT_URL` (ws→http).
 */
import { RoomServiceClient } from 'livekit-server-sdk';

export interface SfuRoomApi {
  createRoom(name: string): Promise<void>;
  /** true present, false confirmed absent; throws on transport or other errors. */
  participantExists(room: string, identity: string): Promise<boolean>;
}

export const ROOM_EMPTY_TIMEOUT_SECONDS = 300;
export const ROOM_DEPARTURE_TIMEOUT_SECONDS = 20;

export function createSfuRoomApi(deps: { livekitUrl: string; apiKey: string; apiSecret: string; requestTimeoutSeconds?: number }): SfuRoomApi {
  const client = new RoomServiceClient(deps.livekitUrl, deps.apiKey, deps.apiSecret, {
    requestTimeout: deps.requestTimeoutSeconds ?? 10,
    failover: false,
  });
  return {
    async createRoom(name) {
      await client.createRoom({
        name,
        emptyTimeout: ROOM_EMPTY_TIMEOUT_SECONDS,
        departureTimeout: ROOM_DEPARTURE_TIMEOUT_SECONDS,
        maxParticipants: 0,
      });
    },
    async participantExists(room, identity) {
      try {
        await client.getParticipant(room, identity);
        return true;
      } catch (err) {
        const e = err as { status?: number; code?: string };
        if (e.status === 404 || e.code === 'not_found') return false;
        throw err;
      }
    },
  };
}
