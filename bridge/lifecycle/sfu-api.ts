/**
 * The small slice of the LiveKit RoomService API the room lifecycle needs, and its
 * implementation over `livekit-server-sdk`'s RoomServiceClient, so the bridge drives our SFU
 * and a LiveKit cluster the same way. `not_found` answers are reported as results, not errors
 * (removing someone already gone is success).
 */
import { RoomServiceClient, ServerError } from 'livekit-server-sdk';

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

export interface SfuRoomApi {
  createRoom(name: string): Promise<void>;
  deleteRoom(name: string): Promise<'deleted' | 'absent'>;
  listRooms(): Promise<SfuRoomInfo[]>;
  listParticipants(name: string): Promise<SfuParticipantInfo[]>;
  removeParticipant(name: string, identity: string): Promise<'removed' | 'absent'>;
}

export interface LivekitSfuApiOptions {
  /** LIVEKIT_URL; ws(s):// is turned into http(s)://. */
  url: string;
  key: string;
  secret: string;
  /** Seconds per request. */
  requestTimeout?: number;
  /** CreateRoom settings; lk-jwt-service uses 300 / 20. */
  emptyTimeout?: number;
  departureTimeout?: number;
}

export function isNotFound(err: unknown): boolean {
  return err instanceof ServerError && (err.code === 'not_found' || err.status === 404);
}

export function httpUrlOf(url: string): string {
  return url.replace(/^ws(s?):\/\//, 'http$1://');
}

export function createLivekitSfuApi(opts: LivekitSfuApiOptions): SfuRoomApi {
  const client = new RoomServiceClient(httpUrlOf(opts.url), opts.key, opts.secret, {
    requestTimeout: opts.requestTimeout ?? 10,
  });
  return {
    async createRoom(name) {
      await client.createRoom({
        name,
        emptyTimeout: opts.emptyTimeout ?? 300,
        departureTimeout: opts.departureTimeout ?? 20,
      });
    },
    async deleteRoom(name) {
      try {
        await client.deleteRoom(name);
        return 'deleted';
      } catch (err) {
        if (isNotFound(err)) return 'absent';
        throw err;
      }
    },
    async listRooms() {
      const rooms = await client.listRooms();
      return rooms.map((r) => ({
        name: r.name,
        createdAtMs: Number(r.creationTimeMs || 0n) || Number(r.creationTime || 0n) * 1000,
        numParticipants: r.numParticipants,
      }));
    },
    async listParticipants(name) {
      try {
        const ps = await client.listParticipants(name);
        return ps.map((p) => ({
          identity: p.identity,
          joinedAtMs: Number(p.joinedAtMs || 0n) || Number(p.joinedAt || 0n) * 1000,
        }));
      } catch (err) {
        if (isNotFound(err)) return [];
        throw err;
      }
    },
    async removeParticipant(name, identity) {
      try {
        await client.removeParticipant(name, identity);
        return 'removed';
      } catch (err) {
        if (isNotFound(err)) return 'absent';
        throw err;
      }
    },
  };
}
