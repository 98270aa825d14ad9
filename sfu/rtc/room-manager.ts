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
  LeaveRequest_Action,
  ParticipantInfo,
  UserPacket,
  type CreateRoomRequest,
  type Room as RoomInfo,
  type RoomAgentDispatch,
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
import type { GuardMetrics } from '../metrics.ts';
import {
  FIELD_LIMIT_KEYS,
  LIMIT_ERRORS,
  identityWithinLimit,
  mergeAttributes,
  participantFieldOverLimit,
  roomNameWithinLimit,
} from './limits.ts';
import { createRevocations } from './revocations.ts';
import type { LoadMonitor } from './load.ts';

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
  config: Pick<SfuConfig, 'room' | 'rtc' | 'limit' | 'signal_limits'>;
  logger: Logger;
  clock: Clock;
  transportFactory: MediaTransportFactory;
  nodeId?: string;
  /** Node load (CPU, media rate) for shedding joins; none = never overloaded by it. */
  load?: Pick<LoadMonitor, 'overloaded'>;
  guard?: GuardMetrics;
}

/** The edge's handle on a joined participant. */
export interface ParticipantSession {
  readonly sid: string;
  readonly identity: string;
  handleRequest(req: SignalRequest): void;
  /** Handling this participant's signalling threw: close it (the client rejoins from scratch). */
  fail(err: unknown): void;
  /** The connection broke one of our signal_limits (`key`): close the participant, logged and counted. */
  closeForLimit(key: string, detail: string): void;
  /** The WebSocket closed: the participant leaves (resume is not offered). */
  handleDisconnect(): void;
}

export interface RoomManager extends RoomServiceBackend, SfuEventSource {
  /** Admission check to run before the WebSocket upgrade; throws JoinRefusedError. */
  checkJoin(req: JoinRequest): void;
  /** Joins after the upgrade; sends JoinResponse and the first subscriber offer. */
  join(req: JoinRequest, sink: SignalSink): ParticipantSession;
  getRoom(name: string): Room | undefined;
  /** Names of the rooms open here (the cluster router claims them in Redis). */
  roomNames(): string[];
  /** Rooms, participants and tracks of this node (the cluster registry reports them). */
  counts(): { rooms: number; participants: number; tracks: number };
  /**
   * Asks the participants of `room` (of every room when absent) to come back through another
   * node: leave with action RECONNECT (draining, or the room lives elsewhere). Returns how many.
   */
  moveParticipants(room?: string): number;
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
  /** Tokens issued before a RemoveParticipant's revoke_token_ts cannot rejoin (bounded). */
  const revoked = createRevocations({ clock });

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

  function createRoom(name: RoomName, settings: RoomSettings, agents?: RoomAgentDispatch[]): Room {
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
      limits: { limit: config.limit, signal: config.signal_limits },
      guard: deps.guard,
      onClosed: (r) => {
        if (rooms.get(r.name) === r) rooms.delete(r.name);
        log.info({ room: r.name }, 'room closed');
      },
    });
    rooms.set(name, room);
    log.info({ room: name }, 'room created');
    emit({ type: 'room_started', room: room.toInfo(), ...(agents?.length ? { agents } : {}) });
    return room;
  }

  function limitError(message: string, key: string): RoomServiceError {
    deps.guard?.refused(key);
    return new RoomServiceError('invalid_argument', message);
  }

  function updateLimitError(field: keyof typeof FIELD_LIMIT_KEYS): RoomServiceError {
    const l = config.limit;
    const max = { name: l.max_participant_name_length, metadata: l.max_metadata_size, attributes: l.max_attributes_size }[field];
    // twirp.InvalidArgumentError(err, max): "<err> <max>".
    return limitError(`${LIMIT_ERRORS[field]} ${max}`, FIELD_LIMIT_KEYS[field]);
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

  function nodeCounts(): { participants: number; tracks: number } {
    let participants = 0;
    let tracks = 0;
    for (const room of rooms.values()) {
      for (const p of room.participants.values()) {
        participants++;
        tracks += p.published.size + p.subscriptions.size;
      }
    }
    return { participants, tracks };
  }

  /** LiveKit's join-time limit checks (ValidateConnectRequest, StartSession), then load. */
  function checkJoinLimits(req: JoinRequest): void {
    const limit = config.limit;
    if (!identityWithinLimit(limit, req.identity)) {
      throw new JoinRefusedError(400, `${LIMIT_ERRORS.identity}: max length ${limit.max_participant_identity_length}`);
    }
    if (!roomNameWithinLimit(limit, req.room)) {
      throw new JoinRefusedError(400, `${LIMIT_ERRORS.roomName}: max length ${limit.max_room_name_length}`);
    }
    const over = participantFieldOverLimit(limit, { metadata: req.metadata, attributes: req.attributes });
    if (over) throw new JoinRefusedError(400, LIMIT_ERRORS[over]);
    // Someone already in the room replaces themselves: that adds nothing to the node.
    if (rooms.get(asRoomName(req.room))?.participants.has(asIdentity(req.identity))) return;
    const overloaded = deps.load?.overloaded(nodeCounts());
    if (overloaded) {
      deps.guard?.refused(overloaded);
      log.warn({ limit: overloaded, room: req.room }, 'node over a configured limit: join refused');
      throw new JoinRefusedError(503, LIMIT_ERRORS.node);
    }
  }

  function checkJoin(req: JoinRequest): void {
    checkJoinLimits(req);
    const room = rooms.get(asRoomName(req.room));
    if (!room && !config.room.auto_create) throw new JoinRefusedError(404, ROOM_NOT_FOUND);
    if (revoked.isRevoked(req.room, req.identity, req.issuedAt)) {
      throw new JoinRefusedError(401, 'permissions denied');
    }
    if (room && !room.hasRoomFor(req.identity)) {
      deps.guard?.refused('room.max_participants');
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
      const room = rooms.get(name) ?? createRoom(name, defaults(), req.roomAgents);
      const p = room.join(req, sink);
      return {
        sid: p.sid,
        identity: p.identity,
        handleRequest: (msg) => p.handleRequest(msg),
        fail: (err) => {
          deps.guard?.participantFailed();
          log.error({ err, room: req.room, participant: p.sid }, 'handling a signal request failed: closing the participant');
          p.close(DisconnectReason.STATE_MISMATCH, true, LeaveRequest_Action.RECONNECT);
        },
        closeForLimit: (key, detail) => p.closeForLimit(key, detail),
        handleDisconnect: () => p.close(DisconnectReason.CLIENT_INITIATED, false),
      };
    },

    getRoom: (name) => rooms.get(asRoomName(name)),

    roomNames: () => [...rooms.keys()],

    counts: () => ({ rooms: rooms.size, ...nodeCounts() }),

    moveParticipants(name) {
      const targets = name === undefined ? [...rooms.values()] : [rooms.get(asRoomName(name))].filter((r) => r !== undefined);
      let moved = 0;
      for (const room of targets) {
        for (const p of Array.from(room.participants.values())) {
          p.close(DisconnectReason.MIGRATION, true, LeaveRequest_Action.RECONNECT);
          moved++;
        }
      }
      if (moved) log.info({ room: name ?? '(all)', moved }, 'participants asked to reconnect through another node');
      return moved;
    },

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
      // LiveKit pkg/service/roomservice.go CreateRoom.
      if (!roomNameWithinLimit(config.limit, req.name)) {
        throw limitError(`${LIMIT_ERRORS.roomName}: max length ${config.limit.max_room_name_length}`, 'limit.max_room_name_length');
      }
      if (participantFieldOverLimit(config.limit, { metadata: req.metadata })) {
        throw limitError(`${LIMIT_ERRORS.metadata} ${config.limit.max_metadata_size}`, 'limit.max_metadata_size');
      }
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
      return createRoom(asRoomName(req.name), settings, req.agents).toInfo();
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
      if (revokeTokenTs !== undefined && revokeTokenTs > 0n) revoked.revoke(roomName, identity, revokeTokenTs);
      p.close(DisconnectReason.PARTICIPANT_REMOVED);
    },

    async mutePublishedTrack(roomName, identity, trackSid, muted): Promise<TrackInfo> {
      const { p } = requireParticipant(roomName, identity);
      const info = p.setTrackMuted(trackSid as TrackSid, muted, true);
      if (!info) throw new RoomServiceError('not_found', 'track not found');
      return info.clone();
    },

    async updateParticipant(roomName, identity, update: UpdateParticipantInput) {
      // LiveKit pkg/service/roomservice.go UpdateParticipant; attributes count merged, as stored.
      const over = participantFieldOverLimit(config.limit, {
        name: update.name,
        metadata: update.metadata,
        ...(update.attributes ? { attributes: update.attributes } : {}),
      });
      if (over) throw updateLimitError(over);
      const { room, p } = requireParticipant(roomName, identity);
      if (update.attributes && participantFieldOverLimit(config.limit, { attributes: mergeAttributes(p.attributes, update.attributes) })) {
        throw updateLimitError('attributes');
      }
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
      if (participantFieldOverLimit(config.limit, { metadata })) {
        throw limitError(`${LIMIT_ERRORS.metadata} ${config.limit.max_metadata_size}`, 'limit.max_metadata_size');
      }
      const room = requireRoom(name);
      room.setMetadata(metadata);
      return room.toInfo();
    },
  };
  return manager;
}
