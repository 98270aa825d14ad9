/**
 * The session layer's media objects when the media lives on a worker: `MediaTransport`,
 * `UpstreamTrack` and `DownTrack` (sfu/rtc/types.ts) as small main-thread proxies. Commands
 * are posted to the participant's worker through `WorkerLink`; getters answer from what the
 * worker pushed last (audio levels every tick, cumulative stats every second). Session code
 * cannot tell them from the in-process werift objects.
 */
import type {
  DataChannelKind,
  DownlinkStats,
  DownTrack,
  DownTrackStats,
  IceCandidateInit,
  MediaTransport,
  MediaTransportEvents,
  SignalTarget,
  UplinkStats,
  UpstreamTrack,
} from '../../rtc/types.ts';
import { audioLevelOf, type AudioCounts } from '../upstream.ts';
import type { ToWorker } from './protocol.ts';

/** What a proxy needs from the pool: its worker's port, requests, and the relay decisions. */
export interface WorkerLink {
  readonly index: number;
  post(msg: ToWorker): void;
  /** Posts a message carrying `req` and resolves when the worker answers `done` (or dies). */
  request(make: (req: number) => ToWorker): Promise<void>;
  subscribe(transport: WorkerTransport, upstream: RemoteUpstream, down: RemoteDownTrack, streamId: string, trackId: string): void;
  closeDown(down: RemoteDownTrack): void;
  closeUpstream(upstream: RemoteUpstream): void;
  forget(transport: WorkerTransport): void;
}

/** Downtrack ids, unique in the process. */
let nextDid = 1;

const EMPTY_UPLINK: UplinkStats = { packetsExpected: 0, packetsReceived: 0, jitterUs: 0, lastPacketAt: 0, subscribers: 0 };
const EMPTY_DOWN: DownTrackStats = {
  packetsSent: 0,
  packetsRetransmitted: 0,
  retransmitMisses: 0,
  nacksReceived: 0,
  keyframeRequestsReceived: 0,
  layer: undefined,
  layerSwitches: 0,
};
const EMPTY_LINK: DownlinkStats = {
  packetsSent: 0,
  reports: 0,
  reportedExpected: 0,
  reportedLost: 0,
  rttMs: 0,
  jitterUs: 0,
  lastReportAt: 0,
};

export class RemoteUpstream implements UpstreamTrack {
  /** Relays of this track to other workers: destination worker → relay id and its downtracks. */
  readonly relays = new Map<number, { relay: number; refs: number }>();
  /** Downtracks attached, on any worker. */
  downs = 0;
  closed = false;
  private audio: AudioCounts = { packets: 0, active: 0, sum: 0 };
  private uplink: UplinkStats = EMPTY_UPLINK;

  readonly link: WorkerLink;
  readonly uid: number;
  readonly kind: 'audio' | 'video';
  readonly mimeType: string;
  readonly clockRate: number;
  readonly ext: Record<number, string>;

  constructor(link: WorkerLink, uid: number, kind: 'audio' | 'video', mimeType: string, clockRate: number, ext: Record<number, string>) {
    this.link = link;
    this.uid = uid;
    this.kind = kind;
    this.mimeType = mimeType;
    this.clockRate = clockRate;
    this.ext = ext;
  }

  requestKeyframe(): void {
    if (!this.closed) this.link.post({ t: 'upstream', uid: this.uid, op: 'keyframe' });
  }

  takeAudioLevel(): { level: number; activeShare: number } {
    const level = audioLevelOf(this.audio);
    this.audio = { packets: 0, active: 0, sum: 0 };
    return level;
  }

  uplinkStats(): UplinkStats {
    return { ...this.uplink, subscribers: this.downs };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.link.closeUpstream(this);
  }

  /** A worker push. */
  addAudio(packets: number, active: number, sum: number): void {
    this.audio.packets += packets;
    this.audio.active += active;
    this.audio.sum += sum;
  }

  setUplink(stats: UplinkStats): void {
    this.uplink = stats;
  }
}

export class RemoteDownTrack implements DownTrack {
  closed = false;
  /** The relay this downtrack reads from, when its track is published on another worker. */
  relay: number | undefined = undefined;
  private snapshot: DownTrackStats = EMPTY_DOWN;
  private linkStats: DownlinkStats = EMPTY_LINK;

  /** The subscriber's worker. */
  readonly worker: WorkerLink;
  readonly did: number;
  /** The subscriber's transport. */
  readonly tid: number;
  readonly upstream: RemoteUpstream;

  constructor(worker: WorkerLink, did: number, tid: number, upstream: RemoteUpstream) {
    this.worker = worker;
    this.did = did;
    this.tid = tid;
    this.upstream = upstream;
  }

  get packetsSent(): number {
    return this.snapshot.packetsSent;
  }

  stats(): DownTrackStats {
    return { ...this.snapshot };
  }

  link(): DownlinkStats {
    return { ...this.linkStats };
  }

  setEnabled(enabled: boolean): void {
    if (!this.closed) this.worker.post({ t: 'down', did: this.did, op: 'enabled', value: enabled });
  }

  setMaxQuality(quality: number): void {
    if (!this.closed) this.worker.post({ t: 'down', did: this.did, op: 'quality', value: quality });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.worker.closeDown(this);
  }

  /** A worker push. */
  setStats(stats: DownTrackStats, link: DownlinkStats): void {
    this.snapshot = stats;
    this.linkStats = link;
  }
}

export class WorkerTransport implements MediaTransport {
  closed = false;
  /** Open downtracks (removed as they close). */
  readonly downs = new Set<RemoteDownTrack>();

  readonly link: WorkerLink;
  readonly tid: number;
  readonly room: string;
  readonly events: MediaTransportEvents;

  constructor(link: WorkerLink, tid: number, room: string, events: MediaTransportEvents) {
    this.link = link;
    this.tid = tid;
    this.room = room;
    this.events = events;
  }

  start(): void {
    this.link.post({ t: 'start', tid: this.tid });
  }

  handleOffer(sdp: string, id: number): Promise<void> {
    if (this.closed) return Promise.resolve();
    return this.link.request((req) => ({ t: 'offer', tid: this.tid, req, sdp, id }));
  }

  handleAnswer(sdp: string, id: number): Promise<void> {
    if (this.closed) return Promise.resolve();
    return this.link.request((req) => ({ t: 'answer', tid: this.tid, req, sdp, id }));
  }

  addCandidate(target: SignalTarget, init: IceCandidateInit): Promise<void> {
    if (this.closed) return Promise.resolve();
    return this.link.request((req) => ({ t: 'candidate', tid: this.tid, req, target, init }));
  }

  subscribe(upstream: UpstreamTrack, streamId: string, trackId: string): DownTrack {
    if (!(upstream instanceof RemoteUpstream)) throw new TypeError('upstream from another transport implementation');
    const down = new RemoteDownTrack(this.link, nextDid++, this.tid, upstream);
    this.downs.add(down);
    this.link.subscribe(this, upstream, down, streamId, trackId);
    return down;
  }

  sendData(kind: DataChannelKind, bytes: Uint8Array): void {
    if (!this.closed) this.link.post({ t: 'data', tid: this.tid, kind, bytes });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.link.post({ t: 'close', tid: this.tid });
    this.link.forget(this);
  }
}
