/**
 * One participant's session state: identity, permissions, ParticipantInfo with its version,
 * tracks it publishes (pending AddTrackRequests until media arrives) and tracks it subscribes
 * to. Talks to its client through a `SignalSink` and to media through a `MediaTransport`; holds
 * neither sockets nor werift objects.
 *
 * Lifecycle: made by Room.join (state JOINED), ACTIVE once the subscriber transport connects,
 * `close(reason)` ends it (transport closed, subscriptions dropped, hooks told once). Called
 * only from Room (session layer) and from the signalling edge via `handleRequest`.
 */
import {
  AddTrackRequest,
  DataPacket,
  DisconnectReason,
  Encryption_Type,
  LeaveRequest,
  LeaveRequest_Action,
  ParticipantInfo,
  ParticipantInfo_Kind,
  ParticipantInfo_State,
  ParticipantPermission,
  SignalRequest,
  SignalResponse,
  TrackInfo,
  TrackPublishedResponse,
  TrackSource,
  TrackType,
  MuteTrackRequest,
  type ClientInfo,
  Pong,
  RequestResponse,
  RequestResponse_Reason,
  VideoQuality,
  type UpdateParticipantMetadata,
  type UpdateTrackSettings,
} from '@livekit/protocol';
import type { Logger } from '../../common/logger.ts';
import type { Clock } from '../../common/clock.ts';
import { newTrackSid, type ParticipantIdentity, type ParticipantSid, type TrackSid } from './ids.ts';
import type {
  DataChannelKind,
  DownTrack,
  IncomingMedia,
  JoinRequest,
  MediaTransport,
  SignalSink,
  UpstreamTrack,
} from './types.ts';
import type { JoinPermissions } from '../signal/auth.ts';
import { DynacastState } from './dynacast.ts';
import { maxQualityFor, subscribedQualityUpdate, type TrackSettings } from './layers.ts';
import type { GuardMetrics } from '../metrics.ts';
import {
  FIELD_LIMIT_KEYS,
  UPDATE_LIMIT_MESSAGES,
  mergeAttributes,
  participantFieldOverLimit,
  sdpProblem,
  bundleProblem,
  type LimitConfig,
  type SignalLimits,
} from './limits.ts';
import { SignalGuard } from './signal-guard.ts';

export interface PublishedTrack {
  info: TrackInfo;
  upstream: UpstreamTrack;
  mid: string;
  /** Video only: which qualities the publisher should keep encoding. */
  dynacast: DynacastState | undefined;
}

interface PendingTrack {
  cid: string;
  cids: string[];
  info: TrackInfo;
}

export interface Subscription {
  down: DownTrack;
  publisher: ParticipantSid;
  track: PublishedTrack;
  disabled: boolean;
  /** Highest quality this subscriber wants (OFF while disabled). */
  quality: VideoQuality;
}

/** What a participant asks of its room. */
export interface ParticipantHooks {
  onActive(p: Participant): void;
  onInfoChanged(p: Participant): void;
  onTrackPublished(p: Participant, track: PublishedTrack): void;
  onTrackUnpublished(p: Participant, track: PublishedTrack): void;
  onData(p: Participant, packet: DataPacket, kind: DataChannelKind): void;
  onSubscriptionRequest(p: Participant, trackSids: string[], subscribe: boolean): void;
  /** A subscription of `p` to `trackSid` came, went or changed its wanted quality. */
  onSubscriptionChanged(p: Participant, trackSid: TrackSid): void;
  onUpdateMetadata(p: Participant, name: string | undefined, metadata: string | undefined, attrs: Record<string, string>): void;
  onClosed(p: Participant, reason: DisconnectReason): void;
}

const SOURCE_NAMES: Record<string, TrackSource> = {
  camera: TrackSource.CAMERA,
  microphone: TrackSource.MICROPHONE,
  screen_share: TrackSource.SCREEN_SHARE,
  screen_share_audio: TrackSource.SCREEN_SHARE_AUDIO,
};

export function permissionToProto(p: JoinPermissions): ParticipantPermission {
  return new ParticipantPermission({
    canSubscribe: p.canSubscribe,
    canPublish: p.canPublish,
    canPublishData: p.canPublishData,
    canPublishSources: p.canPublishSources.map((s) => SOURCE_NAMES[s]).filter((s) => s !== undefined),
    hidden: p.hidden,
    recorder: p.recorder,
    canUpdateMetadata: p.canUpdateMetadata,
    agent: p.agent,
  });
}

export interface ParticipantLimits {
  limit: LimitConfig;
  signal: SignalLimits;
}

export class Participant {
  readonly sid: ParticipantSid;
  readonly identity: ParticipantIdentity;
  readonly clientInfo: ClientInfo;
  readonly autoSubscribe: boolean;
  readonly issuedAt: number;
  readonly joinedAtMs: number;
  name: string;
  metadata: string;
  attributes: Record<string, string>;
  permission: ParticipantPermission;
  state = ParticipantInfo_State.JOINING;
  disconnectReason = DisconnectReason.UNKNOWN_REASON;
  private version = 0;
  /** Set once the participant was ACTIVE, for participant_left vs connection_aborted. */
  wasActive = false;
  readonly published = new Map<TrackSid, PublishedTrack>();
  private pending: PendingTrack[] = [];
  readonly subscriptions = new Map<TrackSid, Subscription>();
  /** Explicit UpdateSubscription choices, which win over auto-subscribe. */
  readonly subscriptionChoices = new Map<TrackSid, boolean>();
  /** UpdateTrackSettings per track, kept for subscriptions made later. */
  private readonly trackSettings = new Map<TrackSid, TrackSettings>();
  private readonly sink: SignalSink;
  private transport: MediaTransport | undefined;
  private readonly hooks: ParticipantHooks;
  private readonly log: Logger;
  private readonly clock: Clock;
  private closed = false;
  private readonly limits: ParticipantLimits;
  private readonly guard: SignalGuard;
  /** Whether a track sid exists in the room (track settings and choices are kept only for those). */
  private readonly knownTrack: (sid: TrackSid) => boolean;

  constructor(opts: {
    sid: ParticipantSid;
    req: JoinRequest;
    sink: SignalSink;
    hooks: ParticipantHooks;
    logger: Logger;
    clock: Clock;
    limits: ParticipantLimits;
    metrics?: GuardMetrics | undefined;
    knownTrack?: (sid: TrackSid) => boolean;
  }) {
    this.sid = opts.sid;
    this.identity = opts.req.identity as ParticipantIdentity;
    this.name = opts.req.name;
    this.metadata = opts.req.metadata;
    this.attributes = { ...opts.req.attributes };
    this.permission = permissionToProto(opts.req.permissions);
    this.clientInfo = opts.req.clientInfo;
    this.autoSubscribe = opts.req.autoSubscribe;
    this.issuedAt = opts.req.issuedAt;
    this.sink = opts.sink;
    this.hooks = opts.hooks;
    this.log = opts.logger;
    this.clock = opts.clock;
    this.joinedAtMs = opts.clock.now();
    this.limits = opts.limits;
    this.guard = new SignalGuard({ limits: opts.limits.signal, clock: opts.clock, logger: opts.logger, metrics: opts.metrics });
    this.knownTrack = opts.knownTrack ?? (() => true);
  }

  /** AddTrack requests still waiting for their media. */
  get pendingTrackCount(): number {
    return this.pending.length;
  }

  /** Track settings kept for later subscriptions (only sids that exist in the room). */
  get trackSettingsCount(): number {
    return this.trackSettings.size;
  }

  /** A track left the room: its settings and subscription choice are of no further use. */
  forgetTrack(sid: TrackSid): void {
    this.trackSettings.delete(sid);
    this.subscriptionChoices.delete(sid);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  get hidden(): boolean {
    return this.permission.hidden;
  }

  attachTransport(transport: MediaTransport): void {
    this.transport = transport;
  }

  toInfo(): ParticipantInfo {
    return new ParticipantInfo({
      sid: this.sid,
      identity: this.identity,
      state: this.state,
      tracks: [...this.published.values()].map((t) => t.info.clone()),
      metadata: this.metadata,
      joinedAt: BigInt(Math.floor(this.joinedAtMs / 1000)),
      joinedAtMs: BigInt(this.joinedAtMs),
      name: this.name,
      version: this.version,
      permission: this.permission.clone(),
      isPublisher: this.published.size > 0,
      kind: this.permission.agent ? ParticipantInfo_Kind.AGENT : ParticipantInfo_Kind.STANDARD,
      attributes: { ...this.attributes },
      disconnectReason: this.disconnectReason,
    });
  }

  /** Every visible change bumps the version so clients never drop the update. */
  bumpVersion(): void {
    this.version++;
  }

  send(msg: SignalResponse): void {
    if (this.closed) return;
    try {
      this.sink.send(msg);
    } catch (err) {
      this.log.debug({ err }, 'signal send failed');
    }
  }

  setState(state: ParticipantInfo_State): void {
    if (this.state === state) return;
    this.state = state;
    this.bumpVersion();
  }

  // ---- signalling from the client ----

  handleRequest(req: SignalRequest): void {
    if (this.closed) return;
    const m = req.message;
    switch (m.case) {
      case 'offer':
        if (this.sdpAcceptable(m.value.sdp, 'offer')) void this.transport?.handleOffer(m.value.sdp, m.value.id);
        return;
      case 'answer':
        if (this.sdpAcceptable(m.value.sdp, 'answer')) void this.transport?.handleAnswer(m.value.sdp, m.value.id);
        return;
      case 'trickle': {
        const candidate = this.guard.trickle(m.value);
        if (candidate) void this.transport?.addCandidate(candidate.target, candidate.init);
        return;
      }
      case 'addTrack':
        this.addTrack(m.value);
        return;
      case 'mute':
        this.setTrackMuted(m.value.sid as TrackSid, m.value.muted, false);
        return;
      case 'subscription': {
        const sids = [...m.value.trackSids, ...m.value.participantTracks.flatMap((pt) => pt.trackSids)];
        this.hooks.onSubscriptionRequest(this, sids, m.value.subscribe);
        return;
      }
      case 'trackSetting':
        this.applyTrackSettings(m.value);
        return;
      case 'leave':
        this.close(DisconnectReason.CLIENT_INITIATED, false);
        return;
      case 'ping':
        this.send(new SignalResponse({ message: { case: 'pong', value: BigInt(this.clock.now()) } }));
        return;
      case 'pingReq':
        this.send(
          new SignalResponse({
            message: {
              case: 'pongResp',
              value: new Pong({ lastPingTimestamp: m.value.timestamp, timestamp: BigInt(this.clock.now()) }),
            },
          }),
        );
        return;
      case 'updateMetadata':
        this.updateOwnMetadata(m.value);
        return;
      default:
        // sync_state, simulate, subscription_permission, update_layers, update_*_track: tolerated.
        return;
    }
  }

  private refuse(reason: RequestResponse_Reason, message: string, requestId = 0): void {
    this.send(
      new SignalResponse({
        message: { case: 'requestResponse', value: new RequestResponse({ requestId, reason, message }) },
      }),
    );
  }

  /** As LiveKit's UpdateMetadata: permission, then name / metadata / attribute limits, then apply. */
  private updateOwnMetadata(v: UpdateParticipantMetadata): void {
    if (!this.permission.canUpdateMetadata) {
      this.guard.badInput('update_metadata without canUpdateOwnMetadata');
      this.refuse(RequestResponse_Reason.NOT_ALLOWED, 'does not have permission to update own metadata', v.requestId);
      return;
    }
    const over = participantFieldOverLimit(this.limits.limit, {
      name: v.name,
      metadata: v.metadata,
      attributes: mergeAttributes(this.attributes, v.attributes),
    });
    if (over) {
      this.guard.badInput(`update_metadata over ${FIELD_LIMIT_KEYS[over]}`, {}, FIELD_LIMIT_KEYS[over]);
      this.refuse(RequestResponse_Reason.LIMIT_EXCEEDED, UPDATE_LIMIT_MESSAGES[over], v.requestId);
      return;
    }
    this.hooks.onUpdateMetadata(this, v.name || undefined, v.metadata || undefined, v.attributes);
    if (v.requestId) this.refuse(RequestResponse_Reason.OK, '', v.requestId);
  }

  /**
   * Checks an SDP before werift's parser sees it (which needed 16 s for 45,000 a=ssrc lines). One
   * over the caps cannot be negotiated, so the participant is closed with a leave saying so.
   */
  private sdpAcceptable(sdp: string, what: 'offer' | 'answer'): boolean {
    const problem = sdpProblem(this.limits.signal, sdp) ?? bundleProblem(sdp);
    if (!problem) return true;
    this.closeForLimit(problem.limit, `${what} refused: ${problem.detail}`);
    return false;
  }

  /** Ends a session that broke one of our signalling caps: leave DISCONNECT (rejoining would repeat it). */
  closeForLimit(key: string, detail: string): void {
    if (this.closed) return;
    this.guard.badInput(`session closed: over ${key}`, { detail }, key);
    this.close(DisconnectReason.STATE_MISMATCH, true, LeaveRequest_Action.DISCONNECT);
  }

  private addTrack(req: AddTrackRequest): void {
    const allowedSources = this.permission.canPublishSources;
    if (
      !this.permission.canPublish ||
      (allowedSources.length > 0 && !allowedSources.includes(req.source))
    ) {
      this.log.info({ source: req.source }, 'add_track refused: no permission to publish');
      this.refuse(RequestResponse_Reason.NOT_ALLOWED, 'does not have permission to publish');
      return;
    }
    const problem = this.guard.addTrackProblem(req, this.pending.length);
    if (problem) {
      this.refuse(RequestResponse_Reason.LIMIT_EXCEEDED, problem);
      return;
    }
    if (this.pending.some((p) => p.cid === req.cid)) {
      this.log.debug({ cid: req.cid }, 'duplicate add_track');
      return;
    }
    const info = new TrackInfo({
      sid: newTrackSid(req.type, req.source),
      type: req.type,
      name: req.name,
      muted: req.muted,
      width: req.width,
      height: req.height,
      simulcast: req.layers.length > 1,
      disableDtx: req.disableDtx,
      source: req.source,
      layers: req.layers,
      stereo: req.stereo,
      disableRed: req.disableRed,
      encryption: req.encryption,
      stream: req.stream,
      audioFeatures: req.audioFeatures,
      backupCodecPolicy: req.backupCodecPolicy,
    });
    this.pending.push({ cid: req.cid, cids: [req.cid, ...req.simulcastCodecs.map((c) => c.cid)], info });
    this.send(
      new SignalResponse({
        message: { case: 'trackPublished', value: new TrackPublishedResponse({ cid: req.cid, track: info }) },
      }),
    );
  }

  // ---- media from the transport ----

  handleIncomingMedia(media: IncomingMedia): void {
    if (this.closed) {
      media.source.close();
      return;
    }
    const wantType = media.kind === 'video' ? TrackType.VIDEO : TrackType.AUDIO;
    let index = this.pending.findIndex((p) => p.cids.includes(media.msidTrackId));
    if (index < 0) index = this.pending.findIndex((p) => p.info.type === wantType);
    if (index < 0) {
      this.log.warn({ mid: media.mid, msid: media.msidTrackId }, 'media without a matching add_track; ignored');
      media.source.close();
      return;
    }
    const [pending] = this.pending.splice(index, 1);
    const info = pending!.info;
    info.mimeType = media.mimeType;
    info.mid = media.mid;
    const sid = info.sid;
    const dynacast =
      media.kind === 'video'
        ? new DynacastState({
            clock: this.clock,
            send: (maxWanted) =>
              this.send(
                new SignalResponse({
                  message: { case: 'subscribedQualityUpdate', value: subscribedQualityUpdate(sid, info.mimeType, maxWanted) },
                }),
              ),
          })
        : undefined;
    const track: PublishedTrack = { info, upstream: media.source, mid: media.mid, dynacast };
    this.published.set(info.sid as TrackSid, track);
    this.bumpVersion();
    this.log.info({ track: info.sid, mime: info.mimeType, encryption: Encryption_Type[info.encryption] }, 'track published');
    this.hooks.onTrackPublished(this, track);
  }

  handleMediaEnded(mid: string): void {
    for (const [sid, track] of this.published) {
      if (track.mid === mid) this.unpublish(sid);
    }
  }

  unpublish(sid: TrackSid): PublishedTrack | undefined {
    const track = this.published.get(sid);
    if (!track) return undefined;
    this.published.delete(sid);
    track.upstream.close();
    track.dynacast?.close();
    this.bumpVersion();
    this.log.info({ track: sid }, 'track unpublished');
    this.hooks.onTrackUnpublished(this, track);
    return track;
  }

  setTrackMuted(sid: TrackSid, muted: boolean, fromServer: boolean): TrackInfo | undefined {
    const track = this.published.get(sid);
    if (!track) {
      const pending = this.pending.find((p) => p.info.sid === sid);
      if (pending) pending.info.muted = muted;
      return pending?.info;
    }
    if (track.info.muted === muted) return track.info;
    track.info.muted = muted;
    if (fromServer) {
      this.send(new SignalResponse({ message: { case: 'mute', value: new MuteTrackRequest({ sid, muted }) } }));
    }
    if (!muted) track.upstream.requestKeyframe();
    this.bumpVersion();
    this.hooks.onInfoChanged(this);
    return track.info;
  }

  handleData(kind: DataChannelKind, bytes: Uint8Array): void {
    if (this.closed) return;
    let packet: DataPacket;
    try {
      packet = DataPacket.fromBinary(bytes);
    } catch {
      this.log.debug('unparseable data packet');
      return;
    }
    this.hooks.onData(this, packet, kind);
  }

  sendData(kind: DataChannelKind, bytes: Uint8Array): void {
    if (!this.closed) this.transport?.sendData(kind, bytes);
  }

  // ---- subscriptions (driven by Room) ----

  wantsTrack(sid: TrackSid): boolean {
    if (!this.permission.canSubscribe) return false;
    return this.subscriptionChoices.get(sid) ?? this.autoSubscribe;
  }

  subscribe(publisher: Participant, track: PublishedTrack): void {
    const sid = track.info.sid as TrackSid;
    if (this.closed || !this.transport || this.subscriptions.has(sid)) return;
    const down = this.transport.subscribe(track.upstream, `${publisher.sid}|${sid}`, sid);
    const sub: Subscription = { down, publisher: publisher.sid, track, disabled: false, quality: VideoQuality.HIGH };
    this.subscriptions.set(sid, sub);
    this.applySettingsTo(sub, this.trackSettings.get(sid));
    this.log.debug({ track: sid, publisher: publisher.identity }, 'subscribed');
    this.hooks.onSubscriptionChanged(this, sid);
  }

  unsubscribe(sid: TrackSid): void {
    const sub = this.subscriptions.get(sid);
    if (!sub) return;
    this.subscriptions.delete(sid);
    sub.down.close();
    this.log.debug({ track: sid }, 'unsubscribed');
    this.hooks.onSubscriptionChanged(this, sid);
  }

  /** Adaptive stream / manual quality: enable, disable, cap the simulcast layer. */
  private applyTrackSettings(req: UpdateTrackSettings): void {
    const settings: TrackSettings = { disabled: req.disabled, width: req.width, height: req.height, quality: req.quality };
    for (const raw of req.trackSids) {
      const sid = raw as TrackSid;
      if (!this.knownTrack(sid)) continue;
      this.trackSettings.set(sid, settings);
      const sub = this.subscriptions.get(sid);
      if (!sub) continue;
      const before = sub.quality;
      this.applySettingsTo(sub, settings);
      if (sub.quality !== before) this.hooks.onSubscriptionChanged(this, sid);
    }
  }

  private applySettingsTo(sub: Subscription, settings: TrackSettings | undefined): void {
    const disabled = settings?.disabled ?? false;
    const quality = settings ? maxQualityFor(settings, sub.track.info.layers) : VideoQuality.HIGH;
    if (sub.disabled !== disabled) {
      sub.disabled = disabled;
      sub.down.setEnabled(!disabled);
    }
    sub.quality = disabled ? VideoQuality.OFF : quality;
    if (!disabled && quality !== VideoQuality.OFF && sub.track.info.type === TrackType.VIDEO) sub.down.setMaxQuality(quality);
  }

  // ---- end ----

  /** Sends leave (unless the client asked to leave) and tears everything down. */
  close(reason: DisconnectReason, notifyClient = true, action = LeaveRequest_Action.DISCONNECT): void {
    if (this.closed) return;
    if (notifyClient) {
      this.send(
        new SignalResponse({
          message: { case: 'leave', value: new LeaveRequest({ reason, action, canReconnect: false }) },
        }),
      );
    }
    this.closed = true;
    this.disconnectReason = reason;
    this.state = ParticipantInfo_State.DISCONNECTED;
    this.bumpVersion();
    for (const sid of Array.from(this.subscriptions.keys())) {
      const sub = this.subscriptions.get(sid);
      this.subscriptions.delete(sid);
      sub?.down.close();
      this.hooks.onSubscriptionChanged(this, sid);
    }
    for (const track of this.published.values()) {
      track.upstream.close();
      track.dynacast?.close();
    }
    this.transport?.close();
    try {
      this.sink.close();
    } catch (err) {
      this.log.debug({ err }, 'closing signal connection failed');
    }
    this.hooks.onClosed(this, reason);
  }
}
