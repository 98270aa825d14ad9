/**
 * The RoomService methods (livekit_room.proto; LiveKit pkg/service/roomservice.go): for each
 * one its request and response messages, the grant it needs and how it maps onto the session
 * layer's `RoomServiceBackend`. Argument checks that LiveKit does at its edge happen here
 * (after the grant check, as in LiveKit); `RoomServiceError`s from the backend become the Twirp
 * code they name.
 */
import type { Message, MessageType } from '@bufbuild/protobuf';
import {
  CreateRoomRequest,
  DeleteRoomRequest,
  DeleteRoomResponse,
  ListParticipantsRequest,
  ListParticipantsResponse,
  ListRoomsRequest,
  ListRoomsResponse,
  MuteRoomTrackRequest,
  MuteRoomTrackResponse,
  RemoveParticipantResponse,
  RoomParticipantIdentity,
  SendDataRequest,
  SendDataResponse,
  UpdateParticipantRequest,
  UpdateRoomMetadataRequest,
  UpdateSubscriptionsRequest,
  UpdateSubscriptionsResponse,
} from '@livekit/protocol';
import type { RoomServiceBackend, UpdateParticipantInput } from '../room-service-api.ts';
import { type ApiGrants, ensureAdminPermission, ensureCreatePermission, ensureListPermission } from './auth.ts';
import { type Decoded, readExtraInt64 } from './codec.ts';
import { invalidArgument } from './errors.ts';

/** One Twirp method of a service whose session-layer side is `B`. */
export interface MethodSpec<B = RoomServiceBackend> {
  readonly request: MessageType;
  /** Throws TwirpError `unauthenticated` when the grants do not allow the call. */
  authorize(grants: ApiGrants, req: Message): void;
  handle(backend: B, decoded: Decoded<Message>): Promise<Message>;
}

export function define<T extends Message<T>, B = RoomServiceBackend>(spec: {
  request: MessageType<T>;
  authorize(grants: ApiGrants, req: T): void;
  handle(backend: B, req: T, decoded: Decoded<Message>): Promise<Message>;
}): MethodSpec<B> {
  return {
    request: spec.request as unknown as MessageType,
    authorize: (grants, req) => spec.authorize(grants, req as unknown as T),
    handle: (backend, decoded) => spec.handle(backend, decoded.message as unknown as T, decoded),
  };
}

const required = (name: string, value: string) => {
  if (!value) throw invalidArgument(name, 'is required');
};

const admin = (grants: ApiGrants, req: { room: string }) => ensureAdminPermission(grants, req.room);

const REVOKE_TOKEN_TS = { no: 3, jsonName: 'revokeTokenTs', protoName: 'revoke_token_ts' };

export const ROOM_SERVICE_METHODS: Readonly<Record<string, MethodSpec>> = {
  CreateRoom: define({
    request: CreateRoomRequest,
    authorize: (g) => ensureCreatePermission(g),
    async handle(backend, req) {
      required('name', req.name);
      return await backend.createRoom(req);
    },
  }),
  ListRooms: define({
    request: ListRoomsRequest,
    authorize: (g) => ensureListPermission(g),
    async handle(backend, req) {
      return new ListRoomsResponse({ rooms: await backend.listRooms(req.names) });
    },
  }),
  DeleteRoom: define({
    request: DeleteRoomRequest,
    authorize: (g) => ensureCreatePermission(g),
    async handle(backend, req) {
      required('room', req.room);
      await backend.deleteRoom(req.room);
      return new DeleteRoomResponse();
    },
  }),
  ListParticipants: define({
    request: ListParticipantsRequest,
    authorize: admin,
    async handle(backend, req) {
      required('room', req.room);
      return new ListParticipantsResponse({ participants: await backend.listParticipants(req.room) });
    },
  }),
  GetParticipant: define({
    request: RoomParticipantIdentity,
    authorize: admin,
    async handle(backend, req) {
      required('room', req.room);
      required('identity', req.identity);
      return await backend.getParticipant(req.room, req.identity);
    },
  }),
  RemoveParticipant: define({
    request: RoomParticipantIdentity,
    authorize: admin,
    async handle(backend, req, decoded) {
      required('room', req.room);
      required('identity', req.identity);
      const revokeTokenTs = readExtraInt64(decoded, REVOKE_TOKEN_TS);
      await backend.removeParticipant(req.room, req.identity, revokeTokenTs);
      return new RemoveParticipantResponse();
    },
  }),
  MutePublishedTrack: define({
    request: MuteRoomTrackRequest,
    authorize: admin,
    async handle(backend, req) {
      required('room', req.room);
      required('identity', req.identity);
      required('track_sid', req.trackSid);
      const track = await backend.mutePublishedTrack(req.room, req.identity, req.trackSid, req.muted);
      return new MuteRoomTrackResponse({ track });
    },
  }),
  UpdateParticipant: define({
    request: UpdateParticipantRequest,
    authorize: admin,
    async handle(backend, req) {
      required('room', req.room);
      required('identity', req.identity);
      // As LiveKit: empty strings and an empty map mean "leave unchanged".
      const update: UpdateParticipantInput = {};
      if (req.metadata) update.metadata = req.metadata;
      if (req.name) update.name = req.name;
      if (req.permission) update.permission = req.permission;
      if (Object.keys(req.attributes).length > 0) update.attributes = { ...req.attributes };
      return await backend.updateParticipant(req.room, req.identity, update);
    },
  }),
  UpdateSubscriptions: define({
    request: UpdateSubscriptionsRequest,
    authorize: admin,
    async handle(backend, req) {
      required('room', req.room);
      required('identity', req.identity);
      await backend.updateSubscriptions(
        req.room,
        req.identity,
        req.trackSids,
        req.subscribe,
        req.participantTracks.map((p) => ({ participantSid: p.participantSid, trackSids: [...p.trackSids] })),
      );
      return new UpdateSubscriptionsResponse();
    },
  }),
  SendData: define({
    request: SendDataRequest,
    authorize: admin,
    async handle(backend, req) {
      required('room', req.room);
      if (req.nonce.length !== 0 && req.nonce.length !== 16) throw invalidArgument('nonce', 'must be 16 bytes');
      const destinationIdentities = [...req.destinationIdentities];
      if (req.destinationSids.length > 0) {
        // Deprecated sid addressing: resolve to identities; unknown sids address nobody.
        const wanted = new Set(req.destinationSids);
        for (const p of await backend.listParticipants(req.room)) {
          if (wanted.has(p.sid) && !destinationIdentities.includes(p.identity)) destinationIdentities.push(p.identity);
        }
        if (destinationIdentities.length === 0) return new SendDataResponse();
      }
      await backend.sendData(req.room, {
        data: req.data,
        kind: req.kind,
        destinationIdentities,
        ...(req.topic !== undefined ? { topic: req.topic } : {}),
      });
      return new SendDataResponse();
    },
  }),
  UpdateRoomMetadata: define({
    request: UpdateRoomMetadataRequest,
    authorize: admin,
    async handle(backend, req) {
      required('room', req.room);
      return await backend.updateRoomMetadata(req.room, req.metadata);
    },
  }),
};
