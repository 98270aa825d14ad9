/**
 * The SFU's session layer entry point: owns the rooms of this node, admits joins (auto-create,
 * max participants, revoked tokens), implements the RoomService contract
 * (`RoomServiceBackend`, sfu/room-service-api.ts) and publishes `SfuEvent`s to webhooks and
 * metrics (`SfuEventSource`). Built by `createRoomManager(deps)`; `close()` ends every room
 * with SERVER_SHUTDOWN. Called from the signalling edge and the Twirp edge, never from media.
 */
import { createHmac, randomBytes } from 'node:crypto';
import {
  DataPacket,
  DataPacket_Kind,
  DisconnectReason,
  ICEServer,
  ParticipantInfo,
  UserPacket,
  type CreateRoomRequest,
  type Room as RoomInfo,
  type SignalRequest,
  type TrackInfo,
} from '@livekit/protocol';
import type { Logger } from '../../common/logger.ts';
import type { Clock } from '../../common/clock.ts';
import type { SfuConfig } from '../config.ts';
import {
  RoomServiceError,
  type RoomServiceBackend,
  type SendDataInput,
  type SfuEvent,
  type SfuEventSource,
  type UpdateParticipantInput,
} from '../room-service-api.ts';
import { asIdentity, asRoomName, newRoomSid, type RoomName, type TrackSid } from './ids.ts';
import { Room, type RoomSettings } from './room.ts';
import type { JoinRequest, MediaTransportFactory, SignalSink } from './types.ts';
import type { Participant } from './participant.ts';

/** A join the session layer refuses, with LiveKit's HTTP status and text. */
export class JoinRefusedError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = 'JoinRefusedError';
    this.status = status;
  }
}

export const ROOM_NOT_FOUND = 'requested room does not exist';

export interface RoomManagerDeps {
  config: Pick<SfuConfig, 'room' | 'rtc'>;
  logger: Logger;
  clock: Clock;
  transportFactory: MediaTransportFactory;
  nodeId?: string;
}

/** The edge's handle on a joined participant. */
export interface ParticipantSession {
  readonly sid: string;
  readonly identity: string;
  handleRequest(req: SignalRequest): void;
  /** The WebSocket closed: the participant leaves (resume is not offered). */
  handleDisconnect(): void;
}

export interface RoomManager extends RoomServiceBackend, SfuEventSource {
  /** Admission check to run before the WebSocket upgrade; throws JoinRefusedError. */
  checkJoin(req: JoinRequest): void;
  /** Joins after the upgrade; sends JoinResponse and the first subscriber offer. */
  join(req: JoinRequest, sink: SignalSink): ParticipantSession;
  getRoom(name: string): Room | undefined;
  close(): void;
}

function turnServers(cfg: SfuConfig['rtc'], identity: string, nowMs: number): ICEServer[] {
  return cfg.turn_servers.map((t) => {
    const scheme = t.protocol === 'tls' ? 'turns' : 'turn';
    const transport = t.protocol === 'udp' ? 'udp' : 'tcp';
    let username = t.username;
    let credential = t.credential;
    if (t.secret) {
      username = `${Math.floor(nowMs / 1000) + t.ttl}:${identity}`;
      credential = createHmac('sha1', t.secret).update(username).digest('base64');
    }
    return new ICEServer({ urls: [`${scheme}:${t.host}:${t.port}?transport=${transport}`], username, credential });
  });
}

export function createRoomManager(deps: RoomManagerDeps): RoomManager {
  const { config, clock } = deps;
  const log = deps.logger.child({ component: 'rooms' });
  const nodeId = deps.nodeId ?? `ND_${randomBytes(6).toString('hex')}`;
  const rooms = new Map<RoomName, Room>();
  const listeners = new Set<(event: SfuEvent) => void>();
  /** room → identity → revokeTokenTs (s): tokens issued before cannot rejoin. */
  const revoked = new Map<string, Map<string, bigint>>();

  function emit(event: SfuEvent): void {
    for (const listener of Array.from(listeners)) {
      try {
        listener(event);
      } catch (err) {
        log.error({ err, event: event.type }, 'event listener failed');
      }
    }
  }

  function defaults(): RoomSettings {
    return {
      emptyTimeout: config.room.empty_timeout,
      departureTimeout: config.room.departure_timeout,
      maxParticipants: config.room.max_participants,
      metadata: '',
    };
  }

  function createRoom(name: RoomName, settings: RoomSettings): Room {
    const room = new Room({
      name,
      sid: newRoomSid(),
      settings,
      clock,
      logger: deps.logger,
      transportFactory: deps.transportFactory,
      nodeId,
      iceServersFor: (identity) => turnServers(config.rtc, identity, clock.now()),
      emit,
      onClosed: (r) => {
        if (rooms.get(r.name) === r) rooms.delete(r.name);
        log.info({ room: r.name }, 'room closed');
      },
    });
    rooms.set(name, room);
    log.info({ room: name }, 'room created');
    emit({ type: 'room_started', room: room.toInfo() });
    return room;
  }

  function requireRoom(name: string): Room {
    const room = rooms.get(asRoomName(name));
    if (!room) throw new RoomServiceError('not_found', ROOM_NOT_FOUND);
    return room;
  }

  function requireParticipant(roomName: string, identity: string): { room: Room; p: Participant } {
    const room = requireRoom(roomName);
    const p = room.participants.get(asIdentity(identity));
    if (!p) throw new RoomServiceError('not_found', 'participant not found');
    return { room, p };
  }

  function checkJoin(req: JoinRequest): void {
    const room = rooms.get(asRoomName(req.room));
    if (!room && !config.room.auto_create) throw new JoinRefusedError(404, ROOM_NOT_FOUND);
    const revokedTs = revoked.get(req.room)?.get(req.identity);
    if (revokedTs !== undefined && BigInt(req.issuedAt) < revokedTs) {
      throw new JoinRefusedError(401, 'permissions denied');
    }
    if (room && !room.hasRoomFor(req.identity)) {
      throw new JoinRefusedError(500, 'room has exceeded its max participants');
    }
    // LiveKit's answer when a node is out of resources (rtcservice.go, rtc.ErrLimitExceeded).
    if (deps.transportFactory.canAdmit?.() === false) {
      throw new JoinRefusedError(503, 'node has exceeded its configured limit');
    }
  }

  const manager: RoomManager = {
    checkJoin,

    join(req, sink) {
      checkJoin(req);
      const name = asRoomName(req.room);
      const room = rooms.get(name) ?? createRoom(name, defaults());
      const p = room.join(req, sink);
      return {
        sid: p.sid,
        identity: p.identity,
        handleRequest: (msg) => p.handleRequest(msg),
        handleDisconnect: () => p.close(DisconnectReason.CLIENT_INITIATED, false),
      };
    },

    getRoom: (name) => rooms.get(asRoomName(name)),

    onEvent(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },

    close() {
      for (const room of Array.from(rooms.values())) room.close(DisconnectReason.SERVER_SHUTDOWN);
      rooms.clear();
    },

    // ---- RoomServiceBackend ----

    async createRoom(req: CreateRoomRequest): Promise<RoomInfo> {
      if (!req.name) throw new RoomServiceError('invalid_argument', 'no room name');
      const existing = rooms.get(asRoomName(req.name));
      if (existing) {
        if (req.emptyTimeout) existing.settings.emptyTimeout = req.emptyTimeout;
        if (req.departureTimeout) existing.settings.departureTimeout = req.departureTimeout;
        if (req.maxParticipants) existing.settings.maxParticipants = req.maxParticipants;
        if (req.metadata) existing.setMetadata(req.metadata);
        return existing.toInfo();
      }
      const settings = defaults();
      if (req.emptyTimeout) settings.emptyTimeout = req.emptyTimeout;
      if (req.departureTimeout) settings.departureTimeout = req.departureTimeout;
      if (req.maxParticipants) settings.maxParticipants = req.maxParticipants;
      settings.metadata = req.metadata;
      return createRoom(asRoomName(req.name), settings).toInfo();
    },

    async listRooms(names) {
      const all = [...rooms.values()];
      const wanted = names.length ? all.filter((r) => names.includes(r.name)) : all;
      return wanted.map((r) => r.toInfo());
    },

    async deleteRoom(name) {
      requireRoom(name).close(DisconnectReason.ROOM_DELETED);
    },

    async listParticipants(name) {
      return requireRoom(name).participantInfos();
    },

    async getParticipant(roomName, identity): Promise<ParticipantInfo> {
      return requireParticipant(roomName, identity).p.toInfo();
    },

    async removeParticipant(roomName, identity, revokeTokenTs) {
      const { p } = requireParticipant(roomName, identity);
      if (revokeTokenTs !== undefined && revokeTokenTs > 0n) {
        let perRoom = revoked.get(roomName);
        if (!perRoom) revoked.set(roomName, (perRoom = new Map()));
        perRoom.set(identity, revokeTokenTs);
      }
      p.close(DisconnectReason.PARTICIPANT_REMOVED);
    },

    async mutePublishedTrack(roomName, identity, trackSid, muted): Promise<TrackInfo> {
      const { p } = requireParticipant(roomName, identity);
      const info = p.setTrackMuted(trackSid as TrackSid, muted, true);
      if (!info) throw new RoomServiceError('not_found', 'track not found');
      return info.clone();
    },

    async updateParticipant(roomName, identity, update: UpdateParticipantInput) {
      const { room, p } = requireParticipant(roomName, identity);
      if (update.permission) {
        p.permission = update.permission.clone();
        p.bumpVersion();
        room.applyPermissionChange(p);
      }
      room.updateParticipant(p, update);
      if (update.permission) room.broadcastParticipant(p);
      return p.toInfo();
    },

    async updateSubscriptions(roomName, identity, trackSids, subscribe, participantTracks) {
      const { room, p } = requireParticipant(roomName, identity);
      room.updateSubscriptions(p, [...trackSids, ...participantTracks.flatMap((pt) => pt.trackSids)], subscribe);
    },

    async sendData(roomName, input: SendDataInput) {
      const room = requireRoom(roomName);
      const packet = new DataPacket({
        kind: input.kind,
        destinationIdentities: input.destinationIdentities,
        value: {
          case: 'user',
          value: new UserPacket({
            payload: input.data,
            destinationIdentities: input.destinationIdentities,
            ...(input.topic !== undefined ? { topic: input.topic } : {}),
          }),
        },
      });
      room.deliverData(packet, input.kind === DataPacket_Kind.LOSSY ? 'lossy' : 'reliable', input.destinationIdentities);
    },

    async updateRoomMetadata(name, metadata) {
      const room = requireRoom(name);
      room.setMetadata(metadata);
      return room.toInfo();
    },
  };
  return manager;
}
