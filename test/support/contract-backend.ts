/**
 * An in-memory `RoomServiceBackend` that follows the contract in room-service-api.ts and records
 * every call, for testing the Twirp edge on its own while the session layer is built elsewhere.
 * Not used by the server: the session layer's room manager is the real backend.
 */
import { ParticipantInfo, Room, TrackInfo, type CreateRoomRequest } from '@livekit/protocol';
import {
  RoomServiceError,
  type RoomServiceBackend,
  type SendDataInput,
  type UpdateParticipantInput,
} from '../../sfu/room-service-api.ts';

export interface RecordedCall {
  method: string;
  args: unknown[];
}

export interface ContractBackend extends RoomServiceBackend {
  readonly calls: RecordedCall[];
  addParticipant(room: string, info: Partial<ParticipantInfo> & { identity: string }): ParticipantInfo;
  /** Makes every call throw this (e.g. a plain Error to see `internal`). */
  failWith?: Error;
}

export function createContractBackend(opts: { nowMs: () => number }): ContractBackend {
  const rooms = new Map<string, { room: Room; participants: Map<string, ParticipantInfo> }>();
  let sid = 0;
  const calls: RecordedCall[] = [];
  const getRoom = (name: string) => {
    const r = rooms.get(name);
    if (!r) throw new RoomServiceError('not_found', `room ${name} does not exist`);
    return r;
  };
  const getParticipant = (room: string, identity: string) => {
    const p = getRoom(room).participants.get(identity);
    if (!p) throw new RoomServiceError('not_found', `participant ${identity} is not in room ${room}`);
    return p;
  };
  const backend: ContractBackend = {
    calls,
    addParticipant(room, info) {
      const p = new ParticipantInfo({ sid: `PA_${++sid}`, state: 2, ...info });
      getRoom(room).participants.set(info.identity, p);
      return p;
    },
    async createRoom(req: CreateRoomRequest) {
      record('createRoom', req);
      const existing = rooms.get(req.name);
      if (existing) {
        if (req.emptyTimeout) existing.room.emptyTimeout = req.emptyTimeout;
        if (req.departureTimeout) existing.room.departureTimeout = req.departureTimeout;
        if (req.maxParticipants) existing.room.maxParticipants = req.maxParticipants;
        if (req.metadata) existing.room.metadata = req.metadata;
        return existing.room.clone();
      }
      const now = opts.nowMs();
      const room = new Room({
        sid: `RM_${++sid}`,
        name: req.name,
        emptyTimeout: req.emptyTimeout || 300,
        departureTimeout: req.departureTimeout || 20,
        maxParticipants: req.maxParticipants,
        metadata: req.metadata,
        creationTime: BigInt(Math.floor(now / 1000)),
        creationTimeMs: BigInt(now),
      });
      rooms.set(req.name, { room, participants: new Map() });
      return room.clone();
    },
    async listRooms(names) {
      record('listRooms', names);
      return [...rooms.values()]
        .filter((r) => names.length === 0 || names.includes(r.room.name))
        .map((r) => new Room({ ...r.room, numParticipants: r.participants.size }));
    },
    async deleteRoom(room) {
      record('deleteRoom', room);
      getRoom(room);
      rooms.delete(room);
    },
    async listParticipants(room) {
      record('listParticipants', room);
      return [...getRoom(room).participants.values()];
    },
    async getParticipant(room, identity) {
      record('getParticipant', room, identity);
      return getParticipant(room, identity);
    },
    async removeParticipant(room, identity, revokeTokenTs) {
      record('removeParticipant', room, identity, revokeTokenTs);
      getParticipant(room, identity);
      getRoom(room).participants.delete(identity);
    },
    async mutePublishedTrack(room, identity, trackSid, muted) {
      record('mutePublishedTrack', room, identity, trackSid, muted);
      const track = getParticipant(room, identity).tracks.find((t) => t.sid === trackSid);
      if (!track) throw new RoomServiceError('not_found', `track ${trackSid} not found`);
      track.muted = muted;
      return new TrackInfo(track);
    },
    async updateParticipant(room, identity, update: UpdateParticipantInput) {
      record('updateParticipant', room, identity, update);
      const p = getParticipant(room, identity);
      if (update.metadata !== undefined) p.metadata = update.metadata;
      if (update.name !== undefined) p.name = update.name;
      if (update.permission) p.permission = update.permission;
      for (const [k, v] of Object.entries(update.attributes ?? {})) {
        if (v === '') delete p.attributes[k];
        else p.attributes[k] = v;
      }
      return p;
    },
    async updateSubscriptions(room, identity, trackSids, subscribe, participantTracks) {
      record('updateSubscriptions', room, identity, trackSids, subscribe, participantTracks);
      getParticipant(room, identity);
    },
    async sendData(room, input: SendDataInput) {
      record('sendData', room, input);
      getRoom(room);
    },
    async updateRoomMetadata(room, metadata) {
      record('updateRoomMetadata', room, metadata);
      const r = getRoom(room);
      r.room.metadata = metadata;
      return r.room.clone();
    },
  };
  function record(method: string, ...args: unknown[]) {
    calls.push({ method, args });
    if (backend.failWith) throw backend.failWith;
  }
  return backend;
}
