/**
 * The seams of the session layer. Upward: `SignalSink`, how a participant's messages reach its
 * WebSocket (implemented by sfu/signal). Downward: `MediaTransport` and friends, the peer
 * connections and forwarding of one participant (implemented by sfu/media with werift). The
 * session layer sees only these interfaces: no sockets, no werift objects.
 */
import type { ClientInfo, RoomAgentDispatch, SignalResponse } from '@livekit/protocol';
import type { JoinPermissions } from '../signal/auth.ts';

export interface SignalSink {
  send(msg: SignalResponse): void;
  /** Closes the signalling connection (after the messages already sent). */
  close(): void;
}

/** What the edge hands to the room manager for a join. */
export interface JoinRequest {
  room: string;
  identity: string;
  name: string;
  metadata: string;
  attributes: Record<string, string>;
  permissions: JoinPermissions;
  autoSubscribe: boolean;
  clientInfo: ClientInfo;
  /** Token issue time (s), checked against RemoveParticipant's revokeTokenTs. */
  issuedAt: number;
  /** The token's `roomConfig.agents`: dispatched when this join creates the room (LiveKit). */
  roomAgents?: RoomAgentDispatch[];
}

export type SignalTarget = 'publisher' | 'subscriber';

export interface IceCandidateInit {
  candidate: string;
  sdpMid?: string | null;
  sdpMLineIndex?: number | null;
  usernameFragment?: string | null;
}

/** A media track arriving on a publisher PC, before the session layer binds it to a request. */
export interface IncomingMedia {
  mid: string;
  kind: 'audio' | 'video';
  /** msid track id from the offer (= AddTrackRequest.cid for the LiveKit clients). */
  msidTrackId: string;
  mimeType: string;
  source: UpstreamTrack;
}

/** One published media track as forwarding sees it (all simulcast layers). Owned by sfu/media. */
export interface UpstreamTrack {
  readonly kind: 'audio' | 'video';
  readonly mimeType: string;
  /** Asks the publisher for a keyframe (rate-limited). */
  requestKeyframe(): void;
  /**
   * Audio only: level (0..1, linear) and share of voiced packets (ssrc-audio-level) since the
   * last call, which resets them. Video answers zeros.
   */
  takeAudioLevel(): { level: number; activeShare: number };
  /** Cumulative receive figures (connection quality reads deltas of them). */
  uplinkStats(): UplinkStats;
  /** Stops forwarding to every downtrack; called when the track is unpublished. */
  close(): void;
}

/**
 * What a published track's packets say about the publisher's uplink, cumulative since it
 * started (all simulcast layers together).
 */
export interface UplinkStats {
  /** Packets expected from the RTP sequence numbers. */
  packetsExpected: number;
  /** Packets received; NACK-recovered packets count, so expected − received is loss after recovery. */
  packetsReceived: number;
  /** Current RFC 3550 interarrival jitter of the worst layer, microseconds. */
  jitterUs: number;
  /** Clock ms of the last packet (0: none yet). */
  lastPacketAt: number;
  /** Subscribers attached now (a video track without any may be paused by dynacast). */
  subscribers: number;
}

/**
 * What the subscriber's RTCP receiver reports say about one downtrack, cumulative since the
 * first report (the report counters are taken relative to it).
 */
export interface DownlinkStats {
  packetsSent: number;
  /** Receiver reports about this downtrack so far. */
  reports: number;
  /** Packets the subscriber expected / reported lost since its first report. */
  reportedExpected: number;
  reportedLost: number;
  /** Latest round-trip time, ms (0: not measured yet). */
  rttMs: number;
  /** Latest jitter the subscriber reported, microseconds. */
  jitterUs: number;
  /** Clock ms of the latest receiver report (0: none yet). */
  lastReportAt: number;
}

/** Loss-recovery and layer figures of one downtrack (tests, diagnostics). */
export interface DownTrackStats {
  packetsSent: number;
  /** Packets resent from the track's cache for this subscriber's NACKs. */
  packetsRetransmitted: number;
  /** NACKed packets that were no longer (or never) in the cache. */
  retransmitMisses: number;
  nacksReceived: number;
  /** PLI + FIR received from this subscriber. */
  keyframeRequestsReceived: number;
  /** Simulcast rid forwarded now ('' without simulcast), undefined before the first keyframe. */
  layer: string | undefined;
  layerSwitches: number;
  /** The subscriber's downlink estimate (REMB, bits/s) capping its layers; undefined when unknown. */
  availableBandwidth?: number | undefined;
}

/** A subscriber's copy of an upstream track. Owned by the subscriber's transport. */
export interface DownTrack {
  /** Packets handed to the subscriber so far. */
  readonly packetsSent: number;
  stats(): DownTrackStats;
  /** Link figures from the subscriber's receiver reports (connection quality). */
  link(): DownlinkStats;
  setEnabled(enabled: boolean): void;
  /** Highest simulcast quality to forward (livekit VideoQuality: 0 LOW, 1 MEDIUM, 2 HIGH). */
  setMaxQuality(quality: number): void;
  close(): void;
}

export type DataChannelKind = 'reliable' | 'lossy';

export interface MediaTransportEvents {
  /** The subscriber (primary) PC connected: the participant is ACTIVE. */
  onConnected(): void;
  /** A PC failed or closed on its own. */
  onFailed(reason: string): void;
  onSignal(msg: SignalResponse): void;
  onIncomingMedia(media: IncomingMedia): void;
  /** A previously announced mid stopped (m-line inactive or removed). */
  onMediaEnded(mid: string): void;
  onData(kind: DataChannelKind, bytes: Uint8Array): void;
}

/** Both peer connections of one participant (protocol v0). */
export interface MediaTransport {
  /** Sends the first subscriber offer (with data channels). */
  start(): void;
  handleOffer(sdp: string, id: number): Promise<void>;
  handleAnswer(sdp: string, id: number): Promise<void>;
  addCandidate(target: SignalTarget, init: IceCandidateInit): Promise<void>;
  /** Adds a sendonly m-line carrying `upstream`, msid `streamId trackId`; renegotiates. */
  subscribe(upstream: UpstreamTrack, streamId: string, trackId: string): DownTrack;
  sendData(kind: DataChannelKind, bytes: Uint8Array): void;
  close(): void;
}

export interface MediaTransportOptions {
  /** For the per-participant child logger. */
  participantSid: string;
  /** The participant's room (media workers keep a room's participants together). */
  room?: string;
  events: MediaTransportEvents;
}

export interface MediaTransportFactory {
  (opts: MediaTransportOptions): MediaTransport;
  /** False when a new participant could not get media now (no UDP port free): joins are refused. */
  canAdmit?(): boolean;
}
