/**
 * The contract between the SFU's session layer (rooms, participants, tracks) and the edges that
 * manage and observe it: the RoomService Twirp API and the webhook notifier. The session layer
 * implements `RoomServiceBackend` and emits `SfuEvent`s; the edges depend only on this file.
 * Messages are @livekit/protocol classes so both Twirp encodings map onto them directly.
 */
import type {
  CreateRoomRequest,
  DataPacket_Kind,
  ParticipantInfo,
  ParticipantPermission,
  Room,
  RoomAgentDispatch,
  TrackInfo,
} from '@livekit/protocol';

/** Thrown by the backend; the Twirp edge maps each to its error code. */
export class RoomServiceError extends Error {
  readonly code: 'not_found' | 'invalid_argument' | 'failed_precondition' | 'already_exists' | 'unavailable';
  constructor(code: RoomServiceError['code'], message: string) {
    super(message);
    this.name = 'RoomServiceError';
    this.code = code;
  }
}

export interface UpdateParticipantInput {
  metadata?: string;
  name?: string;
  permission?: ParticipantPermission;
  /** Keys with empty values are deleted, as in LiveKit. */
  attributes?: Record<string, string>;
}

export interface SendDataInput {
  data: Uint8Array;
  kind: DataPacket_Kind;
  destinationIdentities: string[];
  topic?: string;
}

export interface RoomServiceBackend {
  /** Idempotent: an existing room is updated with the non-zero fields and returned. */
  createRoom(req: CreateRoomRequest): Promise<Room>;
  listRooms(names: string[]): Promise<Room[]>;
  /** Participants get leave ROOM_DELETED. Throws not_found when absent. */
  deleteRoom(room: string): Promise<void>;
  listParticipants(room: string): Promise<ParticipantInfo[]>;
  getParticipant(room: string, identity: string): Promise<ParticipantInfo>;
  /** Leave PARTICIPANT_REMOVED; with revokeTokenTs (s), tokens issued before it cannot rejoin. */
  removeParticipant(room: string, identity: string, revokeTokenTs?: bigint): Promise<void>;
  mutePublishedTrack(room: string, identity: string, trackSid: string, muted: boolean): Promise<TrackInfo>;
  updateParticipant(room: string, identity: string, update: UpdateParticipantInput): Promise<ParticipantInfo>;
  updateSubscriptions(
    room: string,
    identity: string,
    trackSids: string[],
    subscribe: boolean,
    participantTracks: { participantSid: string; trackSids: string[] }[],
  ): Promise<void>;
  sendData(room: string, input: SendDataInput): Promise<void>;
  updateRoomMetadata(room: string, metadata: string): Promise<Room>;
}

/** What the session layer reports; webhooks and metrics subscribe to these. */
export type SfuEvent =
  /** `agents`: the dispatches its creator configured (token roomConfig / CreateRoom), if any. */
  | { type: 'room_started'; room: Room; agents?: RoomAgentDispatch[] }
  | { type: 'room_finished'; room: Room }
  /** The participant became ACTIVE (transport connected), not at WebSocket join. */
  | { type: 'participant_joined'; room: Room; participant: ParticipantInfo }
  /** Gone after having been active; `participant.disconnectReason` says why. */
  | { type: 'participant_left'; room: Room; participant: ParticipantInfo }
  /** Instead of participant_left when the participant never became active. */
  | { type: 'participant_connection_aborted'; room: Room; participant: ParticipantInfo }
  | { type: 'track_published'; room: Room; participant: ParticipantInfo; track: TrackInfo }
  | { type: 'track_unpublished'; room: Room; participant: ParticipantInfo; track: TrackInfo };

export interface SfuEventSource {
  /** Listener exceptions are logged by the emitter, never propagated. Returns an unsubscribe. */
  onEvent(listener: (event: SfuEvent) => void): () => void;
}
