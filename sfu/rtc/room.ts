/**
 * One room: its participants, who subscribes to what, data routing and its own closing timers.
 * Broadcasts ParticipantUpdates (each participant also gets its own info), auto-subscribes
 * ACTIVE participants to published tracks, routes data packets with the sender identity set
 * by the server, sends connection quality updates (connection-quality.ts) and closes itself after `empty_timeout` (nobody ever joined) or
 * `departure_timeout` (the last one left) on the injected clock.
 *
 * Lifecycle: made by the RoomManager; `join` adds participants; `close(reason)` sends every
 * participant a leave, closes them and tells the manager (which forgets the room).
 */
import {
  ClientConfigSetting,
  ClientConfiguration,
  Codec,
  DataPacket,
  DataPacket_Kind,
  DisconnectReason,
  ICEServer,
  JoinResponse,
  LeaveRequest_Action,
  ParticipantInfo,
  ParticipantInfo_State,
  ParticipantUpdate,
  Room as RoomInfo,
  RoomUpdate,
  ServerInfo,
  ServerInfo_Edition,
  SignalResponse,
  TrackType,
  UserPacket,
  type VideoQuality,
} from '@livekit/protocol';
import type { Logger } from '../../common/logger.ts';
import type { Clock, TimerHandle } from '../../common/clock.ts';
import type { SfuEvent } from '../room-service-api.ts';
import { newParticipantSid, type ParticipantIdentity, type RoomName, type RoomSid, type TrackSid } from './ids.ts';
import { Participant, type ParticipantHooks, type ParticipantLimits, type PublishedTrack } from './participant.ts';
import type { GuardMetrics } from '../metrics.ts';
import type { DataChannelKind, JoinRequest, MediaTransportFactory, SignalSink } from './types.ts';
import { highestWanted } from './layers.ts';
import { SpeakerObserver } from './speakers.ts';
import { ConnectionQualityObserver } from './connection-quality.ts';

export const SERVER_VERSION = '1.9.0';
export const PROTOCOL_VERSION = 16;
export const PING_INTERVAL_S = 5;
export const PING_TIMEOUT_S = 15;

export interface RoomSettings {
  emptyTimeout: number;
  departureTimeout: number;
  maxParticipants: number;
  metadata: string;
}

export interface RoomDeps {
  name: RoomName;
  sid: RoomSid;
  settings: RoomSettings;
  clock: Clock;
  logger: Logger;
  transportFactory: MediaTransportFactory;
  nodeId: string;
  iceServersFor: (identity: string) => ICEServer[];
  emit: (event: SfuEvent) => void;
  onClosed: (room: Room) => void;
  limits: ParticipantLimits;
  guard?: GuardMetrics | undefined;
}

export class Room {
  readonly name: RoomName;
  readonly sid: RoomSid;
  readonly createdAtMs: number;
  settings: RoomSettings;
  readonly participants = new Map<ParticipantIdentity, Participant>();
  private readonly deps: RoomDeps;
  private readonly log: Logger;
  private closeTimer: TimerHandle | undefined;
  private everJoined = false;
  private closed = false;
  private readonly hooks: ParticipantHooks;
  private readonly speakers: SpeakerObserver;
  private readonly quality: ConnectionQualityObserver;

  constructor(deps: RoomDeps) {
    this.deps = deps;
    this.name = deps.name;
    this.sid = deps.sid;
    this.settings = { ...deps.settings };
    this.createdAtMs = deps.clock.now();
    this.log = deps.logger.child({ room: deps.name });
    this.hooks = {
      onActive: (p) => this.onParticipantActive(p),
      onInfoChanged: (p) => this.broadcastParticipant(p),
      onTrackPublished: (p, t) => this.onTrackPublished(p, t),
      onTrackUnpublished: (p, t) => this.onTrackUnpublished(p, t),
      onData: (p, packet, kind) => this.routeData(p, packet, kind),
      onSubscriptionRequest: (p, sids, subscribe) => this.updateSubscriptions(p, sids, subscribe),
      onSubscriptionChanged: (p, sid) => {
        this.refreshDynacast(sid);
        if (!p.subscriptions.has(sid)) this.fillFreedSlot(p);
      },
      onUpdateMetadata: (p, name, metadata, attrs) => this.updateParticipant(p, { name, metadata, attributes: attrs }),
      onClosed: (p, reason) => this.onParticipantClosed(p, reason),
    };
    this.armCloseTimer(this.settings.emptyTimeout);
    this.speakers = new SpeakerObserver({
      clock: deps.clock,
      participants: () => this.participants.values(),
      broadcast: (msg) => {
        for (const p of this.participants.values()) p.send(msg);
      },
      logger: this.log,
    });
    this.speakers.start();
    this.quality = new ConnectionQualityObserver({
      clock: deps.clock,
      participants: () => this.participants.values(),
      logger: this.log,
    });
    this.quality.start();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  toInfo(): RoomInfo {
    const visible = [...this.participants.values()].filter((p) => !p.hidden);
    return new RoomInfo({
      sid: this.sid,
      name: this.name,
      emptyTimeout: this.settings.emptyTimeout,
      departureTimeout: this.settings.departureTimeout,
      maxParticipants: this.settings.maxParticipants,
      creationTime: BigInt(Math.floor(this.createdAtMs / 1000)),
      creationTimeMs: BigInt(this.createdAtMs),
      metadata: this.settings.metadata,
      numParticipants: visible.length,
      numPublishers: visible.filter((p) => p.published.size > 0).length,
      enabledCodecs: [new Codec({ mime: 'audio/opus' }), new Codec({ mime: 'video/VP8' })],
    });
  }

  /** Whether one more participant fits (an identity already present replaces itself). */
  hasRoomFor(identity: string): boolean {
    if (this.settings.maxParticipants <= 0) return true;
    if (this.participants.has(identity as ParticipantIdentity)) return true;
    return this.participants.size < this.settings.maxParticipants;
  }

  // ---- join / leave ----

  join(req: JoinRequest, sink: SignalSink): Participant {
    const existing = this.participants.get(req.identity as ParticipantIdentity);
    if (existing) {
      this.log.info({ identity: req.identity }, 'duplicate identity: evicting the older session');
      existing.close(DisconnectReason.DUPLICATE_IDENTITY);
    }
    this.deps.clock.clearTimeout(this.closeTimer);
    this.closeTimer = undefined;
    this.everJoined = true;
    const sid = newParticipantSid();
    const plog = this.log.child({ participant: sid, identity: req.identity });
    const p = new Participant({
      sid,
      req,
      sink,
      hooks: this.hooks,
      logger: plog,
      clock: this.deps.clock,
      limits: this.deps.limits,
      metrics: this.deps.guard,
      knownTrack: (trackSid) => this.findTrack(trackSid) !== undefined,
    });
    const transport = this.deps.transportFactory({
      participantSid: sid,
      room: this.name,
      events: {
        onConnected: () => this.hooks.onActive(p),
        onFailed: (reason) => {
          plog.info({ reason }, 'transport failed');
          // RECONNECT: the client rejoins from scratch instead of giving up.
          p.close(DisconnectReason.STATE_MISMATCH, true, LeaveRequest_Action.RECONNECT);
        },
        onSignal: (msg) => p.send(msg),
        onIncomingMedia: (media) => p.handleIncomingMedia(media),
        onMediaEnded: (mid) => p.handleMediaEnded(mid),
        onData: (kind, bytes) => p.handleData(kind, bytes),
      },
    });
    p.attachTransport(transport);
    this.participants.set(p.identity, p);
    p.setState(ParticipantInfo_State.JOINED);
    p.send(new SignalResponse({ message: { case: 'join', value: this.joinResponse(p) } }));
    transport.start();
    this.broadcastParticipant(p, true);
    plog.info('participant joined');
    return p;
  }

  private joinResponse(p: Participant): JoinResponse {
    const others = [...this.participants.values()].filter((o) => o !== p && !o.hidden && !o.isClosed);
    return new JoinResponse({
      room: this.toInfo(),
      participant: p.toInfo(),
      otherParticipants: others.map((o) => o.toInfo()),
      serverVersion: SERVER_VERSION,
      iceServers: this.deps.iceServersFor(p.identity),
      // Subscriber-primary always: the subscriber PC carries the server's data channels.
      subscriberPrimary: true,
      clientConfiguration: new ClientConfiguration({ resumeConnection: ClientConfigSetting.DISABLED }),
      pingTimeout: PING_TIMEOUT_S,
      pingInterval: PING_INTERVAL_S,
      serverInfo: new ServerInfo({
        edition: ServerInfo_Edition.Standard,
        version: SERVER_VERSION,
        protocol: PROTOCOL_VERSION,
        nodeId: this.deps.nodeId,
      }),
      enabledPublishCodecs: [new Codec({ mime: 'audio/opus' }), new Codec({ mime: 'video/VP8' })],
    });
  }

  private onParticipantActive(p: Participant): void {
    if (p.isClosed || p.state === ParticipantInfo_State.ACTIVE) return;
    p.wasActive = true;
    p.setState(ParticipantInfo_State.ACTIVE);
    this.broadcastParticipant(p);
    this.emit({ type: 'participant_joined', room: this.toInfo(), participant: p.toInfo() });
    for (const other of this.participants.values()) {
      if (other === p) continue;
      for (const track of other.published.values()) this.maybeSubscribe(p, other, track);
    }
  }

  private onParticipantClosed(p: Participant, reason: DisconnectReason): void {
    if (this.participants.get(p.identity) === p) this.participants.delete(p.identity);
    for (const track of p.published.values()) {
      for (const other of this.participants.values()) other.unsubscribe(track.info.sid as TrackSid);
      this.emit({ type: 'track_unpublished', room: this.toInfo(), participant: p.toInfo(), track: track.info });
    }
    this.broadcastParticipant(p);
    this.emit({
      type: p.wasActive ? 'participant_left' : 'participant_connection_aborted',
      room: this.toInfo(),
      participant: p.toInfo(),
    });
    this.log.info({ identity: p.identity, reason: DisconnectReason[reason] }, 'participant left');
    if (this.participants.size === 0 && !this.closed) this.armCloseTimer(this.settings.departureTimeout);
  }

  private armCloseTimer(seconds: number): void {
    this.deps.clock.clearTimeout(this.closeTimer);
    const timeout = this.everJoined ? seconds : this.settings.emptyTimeout;
    this.closeTimer = this.deps.clock.setTimeout(() => {
      this.closeTimer = undefined;
      if (this.participants.size === 0) {
        this.log.info({ timeout }, 'room closing: no participants');
        this.close(DisconnectReason.ROOM_DELETED);
      }
    }, timeout * 1000);
  }

  // ---- tracks and subscriptions ----

  private onTrackPublished(p: Participant, track: PublishedTrack): void {
    this.broadcastParticipant(p);
    this.emit({ type: 'track_published', room: this.toInfo(), participant: p.toInfo(), track: track.info });
    for (const other of this.participants.values()) {
      if (other !== p) this.maybeSubscribe(other, p, track);
    }
    // Nobody subscribed yet: the publisher need not encode anything (dynacast).
    this.refreshDynacast(track.info.sid as TrackSid);
  }

  private onTrackUnpublished(p: Participant, track: PublishedTrack): void {
    for (const other of this.participants.values()) {
      other.unsubscribe(track.info.sid as TrackSid);
      other.forgetTrack(track.info.sid as TrackSid);
    }
    this.broadcastParticipant(p);
    this.emit({ type: 'track_unpublished', room: this.toInfo(), participant: p.toInfo(), track: track.info });
  }

  private maybeSubscribe(subscriber: Participant, publisher: Participant, track: PublishedTrack): void {
    if (subscriber.isClosed || subscriber.state !== ParticipantInfo_State.ACTIVE) return;
    if (!subscriber.wantsTrack(track.info.sid as TrackSid)) return;
    if (!this.hasSubscriptionSlot(subscriber, track)) return;
    subscriber.subscribe(publisher, track);
  }

  /**
   * limit.subscription_limit_video / _audio, as LiveKit's hasCapacityForSubscription: at the limit
   * a further subscription waits (no error to the client) until one of that kind ends.
   */
  private hasSubscriptionSlot(subscriber: Participant, track: PublishedTrack): boolean {
    const video = track.info.type === TrackType.VIDEO;
    const limit = video ? this.deps.limits.limit.subscription_limit_video : this.deps.limits.limit.subscription_limit_audio;
    if (limit <= 0 || subscriber.subscriptions.has(track.info.sid as TrackSid)) return true;
    let count = 0;
    for (const sub of subscriber.subscriptions.values()) if ((sub.track.info.type === TrackType.VIDEO) === video) count++;
    if (count < limit) return true;
    this.log.debug({ subscriber: subscriber.identity, track: track.info.sid, limit }, 'subscription limit reached; subscription waits');
    this.deps.guard?.refused(video ? 'limit.subscription_limit_video' : 'limit.subscription_limit_audio');
    return false;
  }

  /** A subscription ended: with a subscription limit, a waiting one may take its slot. */
  private fillFreedSlot(p: Participant): void {
    const limit = this.deps.limits.limit;
    if (p.isClosed || (limit.subscription_limit_video <= 0 && limit.subscription_limit_audio <= 0)) return;
    for (const other of this.participants.values()) {
      if (other === p) continue;
      for (const track of other.published.values()) {
        if (!p.subscriptions.has(track.info.sid as TrackSid)) this.maybeSubscribe(p, other, track);
      }
    }
  }

  /** Tells a video track's publisher the highest quality any subscriber now wants (dynacast). */
  private refreshDynacast(sid: TrackSid): void {
    const found = this.findTrack(sid);
    const dynacast = found?.track.dynacast;
    if (!dynacast) return;
    const wanted: VideoQuality[] = [];
    for (const p of this.participants.values()) {
      const sub = p.subscriptions.get(sid);
      if (sub && !p.isClosed) wanted.push(sub.quality);
    }
    dynacast.update(highestWanted(wanted));
  }

  private findTrack(sid: string): { publisher: Participant; track: PublishedTrack } | undefined {
    for (const p of this.participants.values()) {
      const track = p.published.get(sid as TrackSid);
      if (track) return { publisher: p, track };
    }
    return undefined;
  }

  updateSubscriptions(p: Participant, trackSids: string[], subscribe: boolean): void {
    for (const sid of trackSids) {
      // Only sids of tracks in the room are remembered: the client cannot grow the map at will.
      const found = this.findTrack(sid);
      if (!found) continue;
      p.subscriptionChoices.set(sid as TrackSid, subscribe);
      if (!subscribe) {
        p.unsubscribe(sid as TrackSid);
        continue;
      }
      if (found.publisher !== p) this.maybeSubscribe(p, found.publisher, found.track);
    }
  }

  /** Applies a permission change: losing canSubscribe drops subscriptions, gaining adds them. */
  applyPermissionChange(p: Participant): void {
    if (!p.permission.canSubscribe) {
      for (const sid of Array.from(p.subscriptions.keys())) p.unsubscribe(sid);
    } else {
      for (const other of this.participants.values()) {
        if (other === p) continue;
        for (const track of other.published.values()) this.maybeSubscribe(p, other, track);
      }
    }
    if (!p.permission.canPublish) {
      for (const sid of Array.from(p.published.keys())) p.unpublish(sid);
    }
  }

  updateParticipant(
    p: Participant,
    update: { name?: string | undefined; metadata?: string | undefined; attributes?: Record<string, string> },
  ): void {
    let changed = false;
    if (update.name !== undefined && update.name !== p.name) {
      p.name = update.name;
      changed = true;
    }
    if (update.metadata !== undefined && update.metadata !== p.metadata) {
      p.metadata = update.metadata;
      changed = true;
    }
    for (const [k, v] of Object.entries(update.attributes ?? {})) {
      if (v === '') {
        if (k in p.attributes) {
          delete p.attributes[k];
          changed = true;
        }
      } else if (p.attributes[k] !== v) {
        p.attributes[k] = v;
        changed = true;
      }
    }
    if (changed) {
      p.bumpVersion();
      this.broadcastParticipant(p);
    }
  }

  setMetadata(metadata: string): void {
    this.settings.metadata = metadata;
    const msg = new SignalResponse({ message: { case: 'roomUpdate', value: new RoomUpdate({ room: this.toInfo() }) } });
    for (const p of this.participants.values()) p.send(msg);
  }

  // ---- broadcast and data ----

  /** Sends `p`'s info to everyone (hidden participants only to themselves). */
  broadcastParticipant(p: Participant, exceptSelf = false): void {
    const update = new SignalResponse({
      message: { case: 'update', value: new ParticipantUpdate({ participants: [p.toInfo()] }) },
    });
    for (const other of this.participants.values()) {
      if (other === p ? exceptSelf : p.hidden) continue;
      other.send(update);
    }
  }

  private routeData(sender: Participant, packet: DataPacket, kind: DataChannelKind): void {
    if (!sender.permission.canPublishData) return;
    const value = packet.value;
    if (value.case === 'metrics') return;
    if (value.case === 'transcription' && !sender.permission.agent) return;
    packet.participantIdentity = sender.hidden ? '' : sender.identity;
    packet.participantSid = sender.hidden ? '' : sender.sid;
    packet.kind = kind === 'lossy' ? DataPacket_Kind.LOSSY : DataPacket_Kind.RELIABLE;
    let destinations = packet.destinationIdentities;
    if (value.case === 'user') {
      const user: UserPacket = value.value;
      user.participantIdentity = packet.participantIdentity;
      user.participantSid = packet.participantSid;
      if (destinations.length === 0) destinations = user.destinationIdentities;
      user.destinationIdentities = destinations;
    }
    packet.destinationIdentities = destinations;
    this.deliverData(packet, kind, destinations, sender);
  }

  deliverData(packet: DataPacket, kind: DataChannelKind, destinations: string[], sender?: Participant): void {
    const bytes = packet.toBinary();
    const only = destinations.length > 0 ? new Set(destinations) : undefined;
    for (const p of this.participants.values()) {
      if (p === sender || (only && !only.has(p.identity))) continue;
      p.sendData(kind, bytes);
    }
  }

  // ---- closing ----

  close(reason: DisconnectReason): void {
    if (this.closed) return;
    this.closed = true;
    this.deps.clock.clearTimeout(this.closeTimer);
    this.speakers.stop();
    this.quality.stop();
    for (const p of Array.from(this.participants.values())) p.close(reason);
    this.participants.clear();
    this.emit({ type: 'room_finished', room: this.toInfo() });
    this.deps.onClosed(this);
  }

  private emit(event: SfuEvent): void {
    this.deps.emit(event);
  }

  /** For tests and RoomService listings. */
  participantInfos(): ParticipantInfo[] {
    return [...this.participants.values()].filter((p) => !p.isClosed).map((p) => p.toInfo());
  }
}
