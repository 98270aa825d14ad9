/**
 * RoomService across the cluster: a `RoomServiceBackend` that acts on a room wherever it lives.
 * A call about one room goes to the node the router says hosts it: this node's room manager, or
 * the hosting node's node-local RoomService (`/cluster-local/twirp`, Twirp JSON, a token minted
 * with this cluster's API key). ListRooms asks every live node and merges. CreateRoom places
 * the room with the node selector first. Errors of the hosting node come back with their Twirp
 * code, so the caller cannot tell which node answered (livekit/livekit pkg/service/roomservice.go
 * does the same through psrpc).
 */
import {
  CreateRoomRequest,
  DeleteRoomRequest,
  DeleteRoomResponse,
  RemoveParticipantResponse,
  SendDataResponse,
  UpdateSubscriptionsResponse,
  ListParticipantsRequest,
  ListParticipantsResponse,
  ListRoomsRequest,
  ListRoomsResponse,
  MuteRoomTrackRequest,
  MuteRoomTrackResponse,
  ParticipantInfo,
  Room,
  RoomParticipantIdentity,
  SendDataRequest,
  TrackInfo,
  UpdateParticipantRequest,
  UpdateRoomMetadataRequest,
  UpdateSubscriptionsRequest,
  ParticipantTracks,
} from '@livekit/protocol';
import type { Message, MessageType } from '@bufbuild/protobuf';
import { AccessToken } from 'livekit-server-sdk';
import type { Logger } from '../../common/logger.ts';
import { RoomServiceError, type RoomServiceBackend } from '../room-service-api.ts';
import { JSON_WRITE_OPTIONS } from '../twirp/codec.ts';
import { NoNodeAvailableError } from './selector.ts';
import type { NodeInfo, Router } from './types.ts';

/** Where the node-local RoomService is mounted (only on clustered nodes). */
export const NODE_LOCAL_TWIRP_PREFIX = '/cluster-local/twirp';
const PEER_TIMEOUT_MS = 3000;
const CODES: ReadonlySet<string> = new Set(['not_found', 'invalid_argument', 'failed_precondition', 'already_exists', 'unavailable']);

export interface ClusterBackendDeps {
  local: RoomServiceBackend;
  router: Router;
  keys: Readonly<Record<string, string>>;
  logger: Logger;
  fetch?: typeof fetch;
}

type RoomGrant = { room?: string; list?: boolean };

export function createClusterBackend(deps: ClusterBackendDeps): RoomServiceBackend {
  const { local, router } = deps;
  const doFetch = deps.fetch ?? fetch;
  const [apiKey, apiSecret] = Object.entries(deps.keys)[0] ?? ['', ''];
  const log = deps.logger.child({ component: 'cluster-api' });

  async function token(grant: RoomGrant): Promise<string> {
    const at = new AccessToken(apiKey, apiSecret, { ttl: 60 });
    at.addGrant({ roomAdmin: true, roomCreate: true, roomList: true, ...(grant.room !== undefined ? { room: grant.room } : {}) });
    return await at.toJwt();
  }

  async function call<T extends Message<T>>(
    node: NodeInfo,
    method: string,
    body: Record<string, unknown>,
    response: MessageType<T>,
    grant: RoomGrant,
  ): Promise<T> {
    const url = `${node.signalUrl.replace(/\/+$/, '')}${NODE_LOCAL_TWIRP_PREFIX}/livekit.RoomService/${method}`;
    let res: Response;
    try {
      res = await doFetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${await token(grant)}` },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(PEER_TIMEOUT_MS),
      });
    } catch (err) {
      const code = ((err as Error).cause as NodeJS.ErrnoException | undefined)?.code;
      if (code === 'ECONNREFUSED') await router.reportUnreachable(node.id);
      log.warn({ node: node.id, method, err: (err as Error).message }, 'the node hosting the room did not answer');
      throw new RoomServiceError('unavailable', 'the node hosting this room did not answer');
    }
    const text = await res.text();
    if (!res.ok) {
      let code = 'unavailable';
      let msg = text;
      try {
        const e = JSON.parse(text) as { code?: string; msg?: string };
        if (e.code && CODES.has(e.code)) code = e.code;
        msg = e.msg ?? text;
      } catch {
        // not Twirp JSON: keep the text
      }
      throw new RoomServiceError(code as RoomServiceError['code'], msg);
    }
    return response.fromJsonString(text, { ignoreUnknownFields: true });
  }

  const json = (m: Message) => m.toJson(JSON_WRITE_OPTIONS) as Record<string, unknown>;

  /** The node hosting `room`, or local when it is here or nowhere (the local backend answers not_found then). */
  async function where(room: string): Promise<NodeInfo | undefined> {
    const placement = await router.placeRoom(room, false);
    return placement?.kind === 'remote' ? placement.node : undefined;
  }

  return {
    async createRoom(req) {
      let placement;
      try {
        placement = await router.placeRoom(req.name, true);
      } catch (err) {
        if (err instanceof NoNodeAvailableError) throw new RoomServiceError('unavailable', err.message);
        throw err;
      }
      if (placement?.kind !== 'remote') return await local.createRoom(req);
      return await call(placement.node, 'CreateRoom', json(new CreateRoomRequest(req)), Room, {});
    },

    async listRooms(names) {
      const nodes = await router.liveNodes();
      const answers = await Promise.all(
        nodes.map(async (n) => {
          if (n.id === router.nodeId) return await local.listRooms(names);
          try {
            return (await call(n, 'ListRooms', json(new ListRoomsRequest({ names })), ListRoomsResponse, { list: true })).rooms;
          } catch {
            // A node that does not answer lists nothing (it is reaped if it is gone).
            return [];
          }
        }),
      );
      const seen = new Map<string, Room>();
      for (const room of answers.flat()) if (!seen.has(room.name)) seen.set(room.name, room);
      return [...seen.values()];
    },

    async deleteRoom(room) {
      const node = await where(room);
      if (!node) return await local.deleteRoom(room);
      await call(node, 'DeleteRoom', json(new DeleteRoomRequest({ room })), DeleteRoomResponse, { room });
    },

    async listParticipants(room) {
      const node = await where(room);
      if (!node) return await local.listParticipants(room);
      return (await call(node, 'ListParticipants', json(new ListParticipantsRequest({ room })), ListParticipantsResponse, { room }))
        .participants;
    },

    async getParticipant(room, identity) {
      const node = await where(room);
      if (!node) return await local.getParticipant(room, identity);
      return await call(node, 'GetParticipant', json(new RoomParticipantIdentity({ room, identity })), ParticipantInfo, { room });
    },

    async removeParticipant(room, identity, revokeTokenTs) {
      const node = await where(room);
      if (!node) return await local.removeParticipant(room, identity, revokeTokenTs);
      const body = json(new RoomParticipantIdentity({ room, identity }));
      if (revokeTokenTs !== undefined) body.revoke_token_ts = revokeTokenTs.toString();
      await call(node, 'RemoveParticipant', body, RemoveParticipantResponse, { room });
    },

    async mutePublishedTrack(room, identity, trackSid, muted) {
      const node = await where(room);
      if (!node) return await local.mutePublishedTrack(room, identity, trackSid, muted);
      const res = await call(node, 'MutePublishedTrack', json(new MuteRoomTrackRequest({ room, identity, trackSid, muted })), MuteRoomTrackResponse, {
        room,
      });
      return res.track ?? new TrackInfo();
    },

    async updateParticipant(room, identity, update) {
      const node = await where(room);
      if (!node) return await local.updateParticipant(room, identity, update);
      const req = new UpdateParticipantRequest({
        room,
        identity,
        metadata: update.metadata ?? '',
        name: update.name ?? '',
        attributes: update.attributes ?? {},
        ...(update.permission ? { permission: update.permission } : {}),
      });
      return await call(node, 'UpdateParticipant', json(req), ParticipantInfo, { room });
    },

    async updateSubscriptions(room, identity, trackSids, subscribe, participantTracks) {
      const node = await where(room);
      if (!node) return await local.updateSubscriptions(room, identity, trackSids, subscribe, participantTracks);
      const req = new UpdateSubscriptionsRequest({
        room,
        identity,
        trackSids,
        subscribe,
        participantTracks: participantTracks.map((p) => new ParticipantTracks(p)),
      });
      await call(node, 'UpdateSubscriptions', json(req), UpdateSubscriptionsResponse, { room });
    },

    async sendData(room, input) {
      const node = await where(room);
      if (!node) return await local.sendData(room, input);
      const req = new SendDataRequest({
        room,
        data: input.data,
        kind: input.kind,
        destinationIdentities: input.destinationIdentities,
        ...(input.topic !== undefined ? { topic: input.topic } : {}),
      });
      await call(node, 'SendData', json(req), SendDataResponse, { room });
    },

    async updateRoomMetadata(room, metadata) {
      const node = await where(room);
      if (!node) return await local.updateRoomMetadata(room, metadata);
      return await call(node, 'UpdateRoomMetadata', json(new UpdateRoomMetadataRequest({ room, metadata })), Room, { room });
    },
  };
}
