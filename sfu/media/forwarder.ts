/**
 * Per-packet forwarding: one `Upstream` per published track (all its simulcast layers), one
 * `DownForwarder` per subscriber. Hot path, kept free of signalling and session concerns.
 *
 * - Layers: the upstream remembers when each rid last delivered a packet; a downtrack follows
 *   the best live layer (f > h > q) and switches only at a keyframe of the new layer, asking the
 *   publisher for one (PLI, rate-limited) while it waits. Video starts at a keyframe.
 * - Continuity: each downtrack rewrites sequence numbers and timestamps with its own offsets,
 *   re-based at every switch so the subscriber never sees a jump or a repeat.
 * - Header extensions: the publisher's ids mean nothing on the subscriber's PC, so only a few
 *   known URIs are carried over, renumbered to the subscriber's ids; the sender adds its own.
 * - Every subscriber gets its own clone: werift's sender and NACK cache keep what they are given.
 * - Payload bytes are never touched (E2EE passthrough).
 *
 * Lifecycle: the transport creates an Upstream per published mid and feeds `onPacket`; the
 * subscriber's transport attaches DownForwarders with `attach`, detaches them on unsubscribe;
 * `close()` detaches everything.
 */
import type { RtpPacket } from 'werift';
import type { Logger } from '../../common/logger.ts';

/** Extensions worth carrying from publisher to subscriber. */
export const FORWARDED_EXTENSION_URIS = new Set([
  'urn:ietf:params:rtp-hdrext:ssrc-audio-level',
  'urn:3gpp:video-orientation',
]);

const LAYER_RANK: Record<string, number> = { '': 0, q: 1, h: 2, f: 3 };
/** A layer with no packet for this long is considered stopped. */
const LAYER_STALE_MS = 1500;
/** At most one keyframe request per layer in this interval. */
const PLI_INTERVAL_MS = 500;

export interface UpstreamOptions {
  kind: 'audio' | 'video';
  mimeType: string;
  clockRate: number;
  now: () => number;
  /** Sends a PLI for a media SSRC to the publisher. */
  sendPli: (ssrc: number) => void;
  /** Publisher's negotiated extension id → URI. */
  extensionUri: (id: number) => string | undefined;
  logger: Logger;
  /** Observes payloads in and out (diagnostics and the passthrough test); off when absent. */
  tap?: PacketTap | undefined;
}

export interface PacketTap {
  (event: { direction: 'in' | 'out'; kind: 'audio' | 'video'; marker: boolean; payload: Buffer }): void;
}

interface LayerState {
  ssrc: number;
  lastSeen: number;
  lastPli: number;
}

/** VP8 (RFC 7741) / H.264 (RFC 6184) keyframe start detection on the RTP payload. */
export function isKeyframeStart(mimeType: string, payload: Uint8Array): boolean {
  if (payload.length === 0) return false;
  const mime = mimeType.toLowerCase();
  if (mime === 'video/vp8') {
    const b0 = payload[0]!;
    const start = (b0 & 0x10) !== 0 && (b0 & 0x07) === 0;
    if (!start) return false;
    let i = 1;
    if (b0 & 0x80) {
      const b1 = payload[1] ?? 0;
      i = 2;
      if (b1 & 0x80) i += (payload[i] ?? 0) & 0x80 ? 2 : 1;
      if (b1 & 0x40) i += 1;
      if (b1 & 0x30) i += 1;
    }
    const header = payload[i];
    return header !== undefined && (header & 0x01) === 0;
  }
  if (mime === 'video/h264') {
    const type = payload[0]! & 0x1f;
    if (type === 5 || type === 7) return true;
    if (type === 24) {
      // STAP-A: walk the aggregated NAL units.
      let i = 1;
      while (i + 2 < payload.length) {
        const size = (payload[i]! << 8) | payload[i + 1]!;
        const nal = payload[i + 2]! & 0x1f;
        if (nal === 5 || nal === 7) return true;
        i += 2 + size;
      }
      return false;
    }
    if (type === 28) {
      const fu = payload[1] ?? 0;
      return (fu & 0x80) !== 0 && ((fu & 0x1f) === 5 || (fu & 0x1f) === 7);
    }
    return false;
  }
  // Audio and unknown codecs: every packet is a valid starting point.
  return true;
}

export class Upstream {
  readonly kind: 'audio' | 'video';
  readonly mimeType: string;
  readonly clockRate: number;
  private readonly opts: UpstreamOptions;
  private readonly layers = new Map<string, LayerState>();
  private readonly downs = new Set<DownForwarder>();
  private closed = false;

  constructor(opts: UpstreamOptions) {
    this.opts = opts;
    this.kind = opts.kind;
    this.mimeType = opts.mimeType;
    this.clockRate = opts.clockRate;
  }

  get now(): () => number {
    return this.opts.now;
  }

  extensionUri(id: number): string | undefined {
    return this.opts.extensionUri(id);
  }

  /** Reports a packet handed to a subscriber's sender (no-op without a tap). */
  tapOut(rtp: RtpPacket): void {
    this.opts.tap?.({ direction: 'out', kind: this.kind, marker: rtp.header.marker, payload: rtp.payload });
  }

  /** Called by the transport for every packet of every layer (`rid` '' without simulcast). */
  onPacket(rid: string, rtp: RtpPacket): void {
    if (this.closed) return;
    const now = this.opts.now();
    let layer = this.layers.get(rid);
    if (!layer) {
      layer = { ssrc: rtp.header.ssrc, lastSeen: now, lastPli: 0 };
      this.layers.set(rid, layer);
    }
    layer.ssrc = rtp.header.ssrc;
    layer.lastSeen = now;
    this.opts.tap?.({ direction: 'in', kind: this.kind, marker: rtp.header.marker, payload: rtp.payload });
    if (this.downs.size === 0) return;
    const keyframe = this.kind === 'video' && isKeyframeStart(this.mimeType, rtp.payload);
    for (const down of this.downs) {
      try {
        down.handle(rid, rtp, keyframe, now);
      } catch (err) {
        this.opts.logger.warn({ err }, 'forwarding a packet failed');
      }
    }
  }

  /** The best layer that delivered recently (the last one seen if all went quiet). */
  bestLayer(now: number): string | undefined {
    let best: string | undefined;
    let bestRank = -1;
    let newest: string | undefined;
    let newestSeen = -1;
    for (const [rid, layer] of this.layers) {
      if (layer.lastSeen > newestSeen) {
        newest = rid;
        newestSeen = layer.lastSeen;
      }
      if (now - layer.lastSeen > LAYER_STALE_MS) continue;
      const rank = LAYER_RANK[rid] ?? 0;
      if (rank > bestRank) {
        best = rid;
        bestRank = rank;
      }
    }
    return best ?? newest;
  }

  /** Asks the publisher for a keyframe on one layer (default: the best), rate-limited. */
  requestKeyframe(rid?: string): void {
    if (this.kind !== 'video' || this.closed) return;
    const now = this.opts.now();
    const target = rid ?? this.bestLayer(now);
    if (target === undefined) return;
    const layer = this.layers.get(target);
    if (!layer || now - layer.lastPli < PLI_INTERVAL_MS) return;
    layer.lastPli = now;
    this.opts.sendPli(layer.ssrc);
  }

  attach(down: DownForwarder): void {
    if (!this.closed) this.downs.add(down);
  }

  detach(down: DownForwarder): void {
    this.downs.delete(down);
  }

  get downtrackCount(): number {
    return this.downs.size;
  }

  close(): void {
    this.closed = true;
    this.downs.clear();
  }
}

export interface DownForwarderOptions {
  /** Whether the subscriber's sender can send yet (negotiated and connected). */
  ready: () => boolean;
  send: (rtp: RtpPacket) => void;
  /** Subscriber's negotiated id for an extension URI. */
  extensionId: (uri: string) => number | undefined;
}

export class DownForwarder {
  private readonly up: Upstream;
  private readonly opts: DownForwarderOptions;
  private enabled = true;
  private currentRid: string | undefined;
  /** First input sequence number forwarded from the current source. */
  private sourceStartSeq = 0;
  /** Packets forwarded since the last switch; the late-packet check only matters early on. */
  private sinceSwitch = 0;
  private seqOffset = 0;
  private tsOffset = 0;
  private lastOutSeq = 0;
  private lastOutTs = 0;
  private lastOutAt = 0;
  private started = false;
  packetsSent = 0;

  constructor(up: Upstream, opts: DownForwarderOptions) {
    this.up = up;
    this.opts = opts;
  }

  setEnabled(enabled: boolean): void {
    if (enabled === this.enabled) return;
    this.enabled = enabled;
    // Resume at a keyframe: force a source switch on the next packet.
    if (enabled) {
      this.currentRid = undefined;
      this.up.requestKeyframe();
    }
  }

  handle(rid: string, rtp: RtpPacket, keyframe: boolean, now: number): void {
    if (!this.enabled || !this.opts.ready()) return;
    const video = this.up.kind === 'video';
    if (rid !== this.currentRid) {
      const target = video ? this.up.bestLayer(now) : rid;
      if (rid !== target) {
        // Packet of another layer: ask for a keyframe on the target when we are not on it.
        if (video && this.currentRid !== target && target !== undefined) this.up.requestKeyframe(target);
        return;
      }
      if (video && !keyframe) {
        this.up.requestKeyframe(target);
        return;
      }
      this.switchTo(rid, rtp, now);
    } else if (video && keyframe) {
      // On the current layer; move up when a better one became live.
      const target = this.up.bestLayer(now);
      if (target !== undefined && target !== rid) this.up.requestKeyframe(target);
    }
    const inSeq = rtp.header.sequenceNumber;
    // Late packets from before the switch point would reuse sequence numbers already sent.
    if (this.sinceSwitch < 1000 && ((inSeq - this.sourceStartSeq) & 0xffff) >= 0x8000) return;
    this.sinceSwitch++;

    const out = rtp.clone();
    out.header.sequenceNumber = (inSeq + this.seqOffset) & 0xffff;
    out.header.timestamp = (rtp.header.timestamp + this.tsOffset) >>> 0;
    out.header.extensions = this.mapExtensions(rtp);
    out.header.extension = out.header.extensions.length > 0;
    if (((out.header.sequenceNumber - this.lastOutSeq) & 0xffff) < 0x8000 || !this.started) {
      this.lastOutSeq = out.header.sequenceNumber;
      this.lastOutTs = out.header.timestamp;
      this.lastOutAt = now;
    }
    this.started = true;
    this.packetsSent++;
    this.up.tapOut(out);
    this.opts.send(out);
  }

  private switchTo(rid: string, rtp: RtpPacket, now: number): void {
    const inSeq = rtp.header.sequenceNumber;
    const inTs = rtp.header.timestamp;
    if (this.started) {
      const elapsed = Math.max(0, now - this.lastOutAt);
      const tsStep = Math.max(1, Math.round((elapsed * this.up.clockRate) / 1000));
      this.seqOffset = (this.lastOutSeq + 1 - inSeq) & 0xffff;
      this.tsOffset = (this.lastOutTs + tsStep - inTs) >>> 0;
    } else {
      this.seqOffset = 0;
      this.tsOffset = 0;
    }
    this.currentRid = rid;
    this.sourceStartSeq = inSeq;
    this.sinceSwitch = 0;
  }

  private mapExtensions(rtp: RtpPacket): { id: number; payload: Buffer }[] {
    const out: { id: number; payload: Buffer }[] = [];
    for (const ext of rtp.header.extensions) {
      const uri = this.up.extensionUri(ext.id);
      if (!uri || !FORWARDED_EXTENSION_URIS.has(uri)) continue;
      const id = this.opts.extensionId(uri);
      if (id !== undefined) out.push({ id, payload: ext.payload });
    }
    return out;
  }
}
