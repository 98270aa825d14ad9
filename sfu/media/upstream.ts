/**
 * One published track as it arrives: all its simulcast layers (rid `q`/`h`/`f`, or '' without
 * simulcast), their liveness and bitrate, the per-layer packet cache subscribers' NACKs are
 * answered from, uplink NACK generation for packets the publisher's network lost, rate-limited
 * keyframe requests (which also coalesce every subscriber's PLI/FIR) and, for audio, the
 * ssrc-audio-level readings active-speaker detection uses, and per-layer uplink loss and jitter
 * counters (link-stats.ts; reported to `streams` metrics about once a second and read by
 * connection quality through `uplinkStats`). Hands each packet to the attached
 * `DownForwarder`s (sfu/media/downtrack.ts).
 *
 * Hot path: `onPacket` runs per received packet; it allocates nothing of its own (the VP8
 * descriptor object is reused, layers are a short array).
 *
 * Lifecycle: the transport makes one per published mid and feeds `onPacket`; subscribers'
 * transports `attach`/`detach` downtracks; `close()` (unpublish, participant gone) detaches all.
 */
import type { RtpPacket } from 'werift';
import type { Logger } from '../../common/logger.ts';
import { PacketCache, UplinkNackTracker } from './packet-cache.ts';
import { newVp8Descriptor, parseVp8Descriptor, type Vp8Descriptor } from './vp8.ts';
import { isKeyframeStart } from './keyframe.ts';
import { countArrival, expectedPackets, jitterMicros, newReceiveCounters, restartCounters, type ReceiveCounters } from './link-stats.ts';
import type { StreamMetrics } from '../metrics.ts';
import type { UplinkStats } from '../rtc/types.ts';

export const AUDIO_LEVEL_URI = 'urn:ietf:params:rtp-hdrext:ssrc-audio-level';

/** Layer ranks: higher is better; '' (no simulcast) ranks as the only layer. */
export const LAYER_RANK: Readonly<Record<string, number>> = { '': 0, q: 1, h: 2, f: 3 };
/** A layer with no packet for this long is considered stopped. */
export const LAYER_STALE_MS = 1500;
/**
 * At most one keyframe request per layer in this interval, by layer rank: as LiveKit's
 * DefaultPLIThrottleConfig (pkg/sfu/receiver_base.go: low quality 500 ms, mid and high 1 s;
 * a track without simulcast is its low layer). Every subscriber's PLI/FIR and every layer
 * switch share it, so they coalesce into one request per interval.
 */
export const PLI_INTERVAL_MS = 500;
export const PLI_INTERVAL_HIGHER_MS = 1000;
const pliInterval = (rank: number) => (rank >= 2 ? PLI_INTERVAL_HIGHER_MS : PLI_INTERVAL_MS);
/** Wait between two uplink NACKs of the same packet when no RTT is known. */
const NACK_RETRY_MS = 40;
/** A packet at most this loud (in -dBov) counts as voice. */
export const ACTIVE_DBOV = 40;

export interface PacketTap {
  (event: { direction: 'in' | 'out'; kind: 'audio' | 'video'; marker: boolean; payload: Buffer }): void;
}

export interface UpstreamOptions {
  kind: 'audio' | 'video';
  mimeType: string;
  clockRate: number;
  now: () => number;
  /** Sends a PLI for a media SSRC to the publisher. */
  sendPli: (ssrc: number) => void;
  /** Sends a generic NACK for a media SSRC to the publisher (the array is reused after the call). */
  sendNack?: (ssrc: number, seqs: number[]) => void;
  /** Publisher's negotiated extension id → URI. */
  extensionUri: (id: number) => string | undefined;
  logger: Logger;
  /** Observes payloads in and out (diagnostics and the passthrough test); off when absent. */
  tap?: PacketTap | undefined;
  /** Uplink loss/jitter per layer, about once a second; off when absent. */
  streams?: StreamMetrics | undefined;
}

export interface LayerState {
  readonly rid: string;
  readonly rank: number;
  ssrc: number;
  lastSeen: number;
  lastPli: number;
  /** Video only. */
  readonly cache: PacketCache | undefined;
  readonly nack: UplinkNackTracker | undefined;
  /** Payload bytes since `rateSince`, folded into `bitrate` about once a second. */
  bytes: number;
  rateSince: number;
  /** Measured bits per second (0 until a second has passed). */
  bitrate: number;
  /** Loss and jitter counters (link-stats.ts). */
  readonly rx: ReceiveCounters;
  /** Expected/received at the last metrics report. */
  reportedExpected: number;
  reportedReceived: number;
}

/** What an Upstream hands its downtracks (sfu/media/downtrack.ts implements it). */
export interface PacketSink {
  /** `desc` is valid for VP8 only, and only during the call. */
  handle(layer: LayerState, rtp: RtpPacket, keyframe: boolean, desc: Vp8Descriptor, now: number): void;
  /**
   * A padding-only packet of `layer` (bandwidth probing, no media): not forwarded; the sink
   * closes the sequence-number gap it leaves.
   */
  skip(layer: LayerState, seq: number): void;
}

/** A packet with the padding bit whose payload is nothing but padding (werift strips it). */
export const isPaddingOnly = (rtp: RtpPacket): boolean => rtp.header.padding && rtp.payload.length === 0;

export interface AudioCounts {
  packets: number;
  active: number;
  sum: number;
}

/** `takeAudioLevel`'s answer from accumulated counts. */
export function audioLevelOf(c: AudioCounts): { level: number; activeShare: number } {
  if (c.packets === 0) return { level: 0, activeShare: 0 };
  return { level: c.active > 0 ? c.sum / c.active : 0, activeShare: c.active / c.packets };
}

export class Upstream {
  readonly kind: 'audio' | 'video';
  readonly mimeType: string;
  readonly clockRate: number;
  readonly isVp8: boolean;
  private readonly opts: UpstreamOptions;
  private readonly layerList: LayerState[] = [];
  private readonly downs = new Set<PacketSink>();
  private readonly desc = newVp8Descriptor();
  private closed = false;
  /** Audio level accumulation since the last `takeAudioLevel`. */
  private levelPackets = 0;
  private levelActive = 0;
  private levelSum = 0;
  /** Uplink round-trip estimate in ms (0 = unknown), set by the transport from RTCP. */
  rttMs = 0;
  /**
   * High-resolution receipt time (ms, performance.now) of the packet being forwarded now, or 0;
   * set by the transport for a sample of packets so downtrack sends can observe forward latency.
   */
  rxStamp = 0;

  constructor(opts: UpstreamOptions) {
    this.opts = opts;
    this.kind = opts.kind;
    this.mimeType = opts.mimeType;
    this.clockRate = opts.clockRate;
    this.isVp8 = opts.mimeType.toLowerCase() === 'video/vp8';
  }

  get now(): () => number {
    return this.opts.now;
  }

  get layers(): readonly LayerState[] {
    return this.layerList;
  }

  extensionUri(id: number): string | undefined {
    return this.opts.extensionUri(id);
  }

  /** Reports a packet handed to a subscriber's sender (no-op without a tap). */
  tapOut(rtp: { header: { marker: boolean }; payload: Buffer }): void {
    this.opts.tap?.({ direction: 'out', kind: this.kind, marker: rtp.header.marker, payload: rtp.payload });
  }

  private layerOf(rid: string, ssrc: number, now: number): LayerState {
    const list = this.layerList;
    for (let i = 0; i < list.length; i++) if (list[i]!.rid === rid) return list[i]!;
    const video = this.kind === 'video';
    const layer: LayerState = {
      rid,
      rank: LAYER_RANK[rid] ?? 0,
      ssrc,
      // Set by the first media packet: padding alone never makes a layer live.
      lastSeen: Number.NEGATIVE_INFINITY,
      lastPli: 0,
      cache: video ? new PacketCache() : undefined,
      nack: video ? new UplinkNackTracker() : undefined,
      bytes: 0,
      rateSince: now,
      bitrate: 0,
      rx: newReceiveCounters(),
      reportedExpected: 0,
      reportedReceived: 0,
    };
    list.push(layer);
    list.sort((a, b) => a.rank - b.rank);
    return layer;
  }

  /** Called by the transport for every packet of every layer (`rid` '' without simulcast). */
  onPacket(rid: string, rtp: RtpPacket): void {
    if (this.closed) return;
    const now = this.opts.now();
    const layer = this.layerOf(rid, rtp.header.ssrc, now);
    if (layer.ssrc !== rtp.header.ssrc) {
      // The publisher restarted this layer: forget the old stream's numbering.
      layer.ssrc = rtp.header.ssrc;
      layer.cache?.clear();
      restartCounters(layer.rx);
    }
    countArrival(layer.rx, rtp.header.sequenceNumber, rtp.header.timestamp, now, this.clockRate);
    if (isPaddingOnly(rtp)) {
      // Padding is not media: it neither keeps the layer alive nor reaches subscribers; its
      // sequence number still counts (no uplink NACK for it, no gap downstream).
      layer.nack?.onPacket(rtp.header.sequenceNumber, now);
      for (const down of this.downs) down.skip(layer, rtp.header.sequenceNumber);
      return;
    }
    layer.lastSeen = now;
    layer.bytes += rtp.payload.length;
    if (now - layer.rateSince >= 1000) {
      layer.bitrate = Math.round((layer.bytes * 8000) / (now - layer.rateSince));
      layer.bytes = 0;
      layer.rateSince = now;
      if (this.opts.streams) this.reportLink(layer, this.opts.streams);
    }
    this.opts.tap?.({ direction: 'in', kind: this.kind, marker: rtp.header.marker, payload: rtp.payload });

    let keyframe = true;
    if (this.kind === 'video') {
      layer.cache!.put(rtp);
      const nack = layer.nack!;
      nack.onPacket(rtp.header.sequenceNumber, now);
      if (nack.missingCount > 0 && this.opts.sendNack) {
        const due = nack.due(now, this.rttMs > 0 ? Math.max(10, this.rttMs * 1.2) : NACK_RETRY_MS);
        if (due.length > 0) this.opts.sendNack(layer.ssrc, due);
      }
      if (this.isVp8) {
        parseVp8Descriptor(rtp.payload, this.desc);
        keyframe = this.desc.keyframe;
      } else {
        this.desc.valid = false;
        keyframe = isKeyframeStart(this.mimeType, rtp.payload);
      }
    } else {
      this.observeAudioLevel(rtp);
    }
    if (this.downs.size === 0) return;
    for (const down of this.downs) {
      try {
        down.handle(layer, rtp, keyframe, this.desc, now);
      } catch (err) {
        this.opts.logger.warn({ err }, 'forwarding a packet failed');
      }
    }
  }

  /** Loss since the last report and current jitter of one layer, to the stream metrics. */
  private reportLink(layer: LayerState, streams: StreamMetrics): void {
    const expected = expectedPackets(layer.rx);
    const received = layer.rx.received;
    const exp = expected - layer.reportedExpected;
    const lost = Math.max(0, exp - (received - layer.reportedReceived));
    layer.reportedExpected = expected;
    layer.reportedReceived = received;
    streams.packetLoss('incoming', this.kind, lost, exp);
    streams.jitter('incoming', this.kind, jitterMicros(layer.rx.jitter, this.clockRate));
  }

  /** Cumulative receive figures of all layers (see `UplinkStats`). */
  uplinkStats(): UplinkStats {
    let packetsExpected = 0;
    let packetsReceived = 0;
    let jitter = 0;
    let lastPacketAt = 0;
    for (const l of this.layerList) {
      packetsExpected += expectedPackets(l.rx);
      packetsReceived += l.rx.received;
      if (l.rx.jitter > jitter) jitter = l.rx.jitter;
      if (l.lastSeen > lastPacketAt) lastPacketAt = l.lastSeen;
    }
    return {
      packetsExpected,
      packetsReceived,
      jitterUs: jitterMicros(jitter, this.clockRate),
      lastPacketAt,
      subscribers: this.downs.size,
    };
  }

  private observeAudioLevel(rtp: RtpPacket): void {
    const exts = rtp.header.extensions;
    for (let i = 0; i < exts.length; i++) {
      const ext = exts[i]!;
      if (ext.payload.length < 1 || this.opts.extensionUri(ext.id) !== AUDIO_LEVEL_URI) continue;
      const dbov = ext.payload[0]! & 0x7f;
      this.levelPackets++;
      if (dbov <= ACTIVE_DBOV) {
        this.levelActive++;
        this.levelSum += 10 ** (-dbov / 20);
      }
      return;
    }
  }

  /**
   * Audio activity since the last call: `level` 0..1 (mean linear level of the voiced packets),
   * `active` share of voiced packets; resets the accumulation. Called by the session layer's
   * speaker observer a few times a second.
   */
  takeAudioLevel(): { level: number; activeShare: number } {
    return audioLevelOf(this.takeAudioCounts());
  }

  /**
   * The raw accumulation behind `takeAudioLevel` (packets with a level, voiced packets, sum of
   * their linear levels), reset by the call: a media worker pushes these, and the main thread
   * adds pushes together before `audioLevelOf`, which keeps the result exact.
   */
  takeAudioCounts(): AudioCounts {
    const counts: AudioCounts = { packets: this.levelPackets, active: this.levelActive, sum: this.levelSum };
    this.levelPackets = 0;
    this.levelActive = 0;
    this.levelSum = 0;
    return counts;
  }

  /**
   * The layer to forward for a subscriber wanting at most `maxRank`: the best live layer not
   * above it, else the lowest live one, else (all quiet) the one heard from last.
   */
  layerFor(maxRank: number, now: number): LayerState | undefined {
    const list = this.layerList;
    let below: LayerState | undefined;
    let above: LayerState | undefined;
    let newest: LayerState | undefined;
    for (let i = 0; i < list.length; i++) {
      const layer = list[i]!;
      if (layer.lastSeen === Number.NEGATIVE_INFINITY) continue; // padding only so far
      if (newest === undefined || layer.lastSeen > newest.lastSeen) newest = layer;
      if (now - layer.lastSeen > LAYER_STALE_MS) continue;
      if (layer.rank <= maxRank) below = layer;
      else if (above === undefined) above = layer;
    }
    return below ?? above ?? newest;
  }

  /** The best live layer (no subscriber limit). */
  bestLayer(now: number): string | undefined {
    return this.layerFor(Number.POSITIVE_INFINITY, now)?.rid;
  }

  /** Asks the publisher for a keyframe on one layer (default: the best), rate-limited per layer. */
  requestKeyframe(rid?: string): void {
    if (this.kind !== 'video' || this.closed) return;
    const now = this.opts.now();
    let layer: LayerState | undefined;
    if (rid === undefined) layer = this.layerFor(Number.POSITIVE_INFINITY, now);
    else for (const l of this.layerList) if (l.rid === rid) layer = l;
    if (!layer || now - layer.lastPli < pliInterval(layer.rank)) return;
    layer.lastPli = now;
    this.opts.sendPli(layer.ssrc);
  }

  /** The cached packet `seq` of layer `rid` (for a subscriber's NACK). */
  cached(rid: string, seq: number): RtpPacket | undefined {
    for (const l of this.layerList) if (l.rid === rid) return l.cache?.get(seq);
    return undefined;
  }

  /** Uplink loss recovery figures summed over layers. */
  get uplinkNackStats(): { missed: number; recovered: number } {
    let missed = 0;
    let recovered = 0;
    for (const l of this.layerList) {
      missed += l.nack?.missed ?? 0;
      recovered += l.nack?.recovered ?? 0;
    }
    return { missed, recovered };
  }

  attach(down: PacketSink): void {
    if (!this.closed) this.downs.add(down);
  }

  detach(down: PacketSink): void {
    this.downs.delete(down);
  }

  get downtrackCount(): number {
    return this.downs.size;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  close(): void {
    this.closed = true;
    this.downs.clear();
    for (const l of this.layerList) l.cache?.clear();
  }
}
