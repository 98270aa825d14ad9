/**
 * One subscriber's copy of an upstream track (`DownForwarder`): picks the simulcast layer to
 * forward (the best live one not above the subscriber's limit, `setMaxRank`), switches only at
 * a keyframe of the new layer (asking the publisher for one, rate-limited by the Upstream), and
 * rewrites what the subscriber sees so it is one continuous stream: sequence numbers,
 * timestamps and VP8 PictureID/TL0PICIDX/KEYIDX get per-switch offsets. Answers the
 * subscriber's NACKs by translating its sequence numbers back through the last few switch
 * points into the track's shared packet cache.
 *
 * - Header extensions: publisher ids mean nothing on the subscriber's PC, so only a few known
 *   URIs are carried over, renumbered; the sender adds its own (mid, abs-send-time).
 * - Each subscriber gets its own packet object (werift's sender mutates what it is given);
 *   payload bytes are shared and never changed, except VP8 descriptor counters after a layer
 *   switch, which go into a copy.
 *
 * Lifecycle: made and attached by the subscriber's transport; `setEnabled`, `setMaxRank`,
 * `requestKeyframe` and `retransmit` come from the transport / session layer; the transport
 * detaches it on unsubscribe.
 */
import { RtpHeader, RtpPacket } from 'werift';
import type { LayerState, PacketSink, Upstream } from './upstream.ts';
import { Vp8Munger, newVp8Descriptor, parseVp8Descriptor, type Vp8Descriptor, type Vp8Offsets } from './vp8.ts';

/** Extensions worth carrying from publisher to subscriber. */
export const FORWARDED_EXTENSION_URIS = new Set([
  'urn:ietf:params:rtp-hdrext:ssrc-audio-level',
  'urn:3gpp:video-orientation',
]);

const NO_EXTENSIONS: { id: number; payload: Buffer }[] = [];
/** How long a publisher-id → subscriber-id extension mapping is trusted before it is looked up again. */
const EXTENSION_MAP_TTL_MS = 1000;

/**
 * The header of a packet as one subscriber gets it: the rewritten numbers and the carried-over
 * extensions, the rest as it came (SSRC and payload type are the sender's to set). A plain
 * object, not werift's RtpHeader (whose constructor costs a dozen property definitions).
 */
export interface ForwardedHeader {
  readonly marker: boolean;
  readonly payloadType: number;
  readonly ssrc: number;
  readonly csrc: readonly number[];
  readonly extensionProfile: number;
  sequenceNumber: number;
  timestamp: number;
  extensions: { id: number; payload: Buffer }[];
}

/** One packet handed to a subscriber's sender (fresh per subscriber and packet). */
export interface ForwardedPacket {
  header: ForwardedHeader;
  payload: Buffer;
}

/** werift's own packet for a forwarded one (its sender mutates what it gets: a new object). */
export function toRtpPacket(fwd: ForwardedPacket): RtpPacket {
  const h = fwd.header;
  const header = new RtpHeader({
    marker: h.marker,
    payloadType: h.payloadType,
    ssrc: h.ssrc,
    csrc: [...h.csrc],
    extensionProfile: h.extensionProfile as RtpHeader['extensionProfile'],
    sequenceNumber: h.sequenceNumber,
    timestamp: h.timestamp,
    extensions: [...h.extensions],
    extension: h.extensions.length > 0,
  });
  return new RtpPacket(header, fwd.payload);
}
/** Switch points (layer switches, dropped padding) remembered for NACK translation (a power of two). */
const SEGMENTS = 16;

export interface DownForwarderOptions {
  /** Whether the subscriber's sender can send yet (negotiated and connected). */
  ready: () => boolean;
  send: (pkt: ForwardedPacket) => void;
  /** Subscriber's negotiated id for an extension URI. */
  extensionId: (uri: string) => number | undefined;
}

/** One stretch of output between two layer switches. */
interface Segment {
  used: boolean;
  rid: string;
  /** First output sequence number of the stretch. */
  outStart: number;
  /** First input sequence number of the stretch. */
  inStart: number;
  /** Packets sent in the stretch. */
  sent: number;
  seqOffset: number;
  tsOffset: number;
  vp8: Vp8Offsets;
}

export class DownForwarder implements PacketSink {
  private readonly up: Upstream;
  private readonly opts: DownForwarderOptions;
  private enabled = true;
  private maxRank = Number.POSITIVE_INFINITY;
  private currentRid: string | undefined;
  /** Ring of SEGMENTS stretches, each made when first used (most downtracks never switch). */
  private readonly segments: (Segment | undefined)[] = Array.from({ length: SEGMENTS }, () => undefined);
  private segIndex = 0;
  /** First input sequence number forwarded from the current source. */
  private sourceStartSeq = 0;
  /** Packets forwarded since the last switch; the late-packet check only matters early on. */
  private sinceSwitch = 0;
  private lastOutSeq = 0;
  /** Input sequence number of the newest packet forwarded (or padding skipped) from the source. */
  private lastInSeq = 0;
  private lastOutTs = 0;
  private lastOutAt = 0;
  private started = false;
  private readonly munger = new Vp8Munger();
  private readonly rtxDesc: Vp8Descriptor = newVp8Descriptor();
  /** Publisher extension id → subscriber id (0: not carried), refreshed every EXTENSION_MAP_TTL_MS. */
  private readonly extMap = new Int16Array(256).fill(-1);
  private extMapAt = Number.NEGATIVE_INFINITY;
  packetsSent = 0;
  /** Packets resent from the cache for the subscriber's NACKs. */
  packetsRetransmitted = 0;
  /** NACKed packets no longer (or never) in the cache. */
  retransmitMisses = 0;
  /** Layer switches done (the first layer counts). */
  switches = 0;

  constructor(up: Upstream, opts: DownForwarderOptions) {
    this.up = up;
    this.opts = opts;
  }

  /** Stretches of output remembered so far (at most SEGMENTS). */
  get segmentsHeld(): number {
    return this.segments.reduce((n, seg) => n + (seg ? 1 : 0), 0);
  }

  /** The stretch in ring slot `i`, made on first use. */
  private segmentAt(i: number): Segment {
    let seg = this.segments[i];
    if (!seg) {
      seg = { used: false, rid: '', outStart: 0, inStart: 0, sent: 0, seqOffset: 0, tsOffset: 0, vp8: { pictureId: 0, tl0PicIdx: 0, keyIdx: 0 } };
      this.segments[i] = seg;
    }
    return seg;
  }

  /** The rid being forwarded ('' without simulcast), undefined before the first keyframe. */
  get currentLayer(): string | undefined {
    return this.currentRid;
  }

  setEnabled(enabled: boolean): void {
    if (enabled === this.enabled) return;
    this.enabled = enabled;
    // Resume at a keyframe: force a source switch on the next packet.
    if (enabled) {
      this.currentRid = undefined;
      this.up.requestKeyframe(this.up.layerFor(this.maxRank, this.up.now())?.rid);
    }
  }

  /** Highest layer rank the subscriber wants (1 q, 2 h, 3 f; Infinity = best available). */
  setMaxRank(rank: number): void {
    if (rank === this.maxRank) return;
    this.maxRank = rank;
    const target = this.up.layerFor(rank, this.up.now());
    if (this.enabled && target && target.rid !== this.currentRid) this.up.requestKeyframe(target.rid);
  }

  /** The subscriber lost a picture (PLI/FIR): ask for a keyframe of the layer it receives. */
  requestKeyframe(): void {
    this.up.requestKeyframe(this.currentRid ?? this.up.layerFor(this.maxRank, this.up.now())?.rid);
  }

  handle(layer: LayerState, rtp: RtpPacket, keyframe: boolean, desc: Vp8Descriptor, now: number): void {
    if (!this.enabled || !this.opts.ready()) return;
    const video = this.up.kind === 'video';
    if (layer.rid !== this.currentRid) {
      if (video) {
        const target = this.up.layerFor(this.maxRank, now);
        if (target !== layer) {
          // Packet of another layer: make sure the target's keyframe is on its way.
          if (target !== undefined && this.currentRid !== target.rid) this.up.requestKeyframe(target.rid);
          return;
        }
        if (!keyframe) {
          this.up.requestKeyframe(layer.rid);
          return;
        }
      }
      this.switchTo(layer.rid, rtp, desc, now);
    } else if (video && keyframe) {
      // On the current layer; move when the wanted one changed or came alive.
      const target = this.up.layerFor(this.maxRank, now);
      if (target !== undefined && target !== layer) this.up.requestKeyframe(target.rid);
    }
    const inSeq = rtp.header.sequenceNumber;
    // Late packets from before the switch point would reuse sequence numbers already sent.
    if (this.sinceSwitch < 1000 && ((inSeq - this.sourceStartSeq) & 0xffff) >= 0x8000) return;
    this.sinceSwitch++;

    let seg = this.segmentAt(this.segIndex);
    if (((inSeq - seg.inStart) & 0xffff) >= 0x8000) {
      // Older than the stretch (a late packet from before a dropped padding packet).
      const older = this.segmentOfInput(inSeq);
      if (!older) return;
      seg = older;
    } else if (((inSeq - this.lastInSeq) & 0xffff) < 0x8000) this.lastInSeq = inSeq;
    seg.sent++;
    const out = this.rewrite(rtp, seg, now);
    if (video && desc.valid) out.payload = this.munger.rewrite(rtp.payload, desc);
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

  /**
   * A padding-only packet of the source was dropped: when it is the next one in order, the
   * output numbering moves back by one so the subscriber sees no gap (and NACKs nothing). A new
   * stretch begins unless nothing was sent in the current one, so NACK translation of what was
   * sent before stays exact. Out-of-order padding leaves its gap (LiveKit's munger does the same).
   */
  skip(layer: LayerState, seq: number): void {
    if (!this.enabled || !this.started || layer.rid !== this.currentRid) return;
    if (((seq - this.lastInSeq) & 0xffff) !== 1) return;
    this.lastInSeq = seq;
    let seg = this.segmentAt(this.segIndex);
    if (seg.sent > 0) {
      const prev = seg;
      this.segIndex = (this.segIndex + 1) & (SEGMENTS - 1);
      seg = this.segmentAt(this.segIndex);
      seg.used = true;
      seg.rid = prev.rid;
      seg.tsOffset = prev.tsOffset;
      seg.vp8.pictureId = prev.vp8.pictureId;
      seg.vp8.tl0PicIdx = prev.vp8.tl0PicIdx;
      seg.vp8.keyIdx = prev.vp8.keyIdx;
      seg.seqOffset = prev.seqOffset;
      seg.outStart = (this.lastOutSeq + 1) & 0xffff;
      seg.sent = 0;
    }
    seg.seqOffset = (seg.seqOffset - 1) & 0xffff;
    seg.inStart = (seq + 1) & 0xffff;
  }

  /** The remembered stretch of the current source that input `inSeq` belongs to. */
  private segmentOfInput(inSeq: number): Segment | undefined {
    for (let k = 1; k < SEGMENTS; k++) {
      const s = this.segments[(this.segIndex - k) & (SEGMENTS - 1)];
      if (!s?.used || s.rid !== this.currentRid) return undefined;
      if (((inSeq - s.inStart) & 0xffff) < 0x8000) return s;
    }
    return undefined;
  }

  /**
   * The packet the subscriber knows as `outSeq`, rebuilt from the track's cache with the
   * offsets in force when it was first sent; undefined when it is gone or was never sent.
   */
  retransmit(outSeq: number): RtpPacket | undefined {
    if (!this.started || ((this.lastOutSeq - outSeq) & 0xffff) >= 0x8000) {
      this.retransmitMisses++;
      return undefined;
    }
    let seg: Segment | undefined;
    for (let k = 0; k < SEGMENTS; k++) {
      const s = this.segments[(this.segIndex - k) & (SEGMENTS - 1)];
      if (!s?.used) break;
      if (((outSeq - s.outStart) & 0xffff) < 0x8000) {
        seg = s;
        break;
      }
    }
    const cached = seg && this.up.cached(seg.rid, (outSeq - seg.seqOffset) & 0xffff);
    if (!seg || !cached) {
      this.retransmitMisses++;
      return undefined;
    }
    const out = this.rewrite(cached, seg, this.up.now());
    if (this.up.isVp8 && parseVp8Descriptor(cached.payload, this.rtxDesc)) {
      out.payload = this.munger.rewrite(cached.payload, this.rtxDesc, seg.vp8, false);
    }
    this.packetsRetransmitted++;
    return toRtpPacket(out);
  }

  private rewrite(rtp: RtpPacket, seg: Segment, now: number): ForwardedPacket {
    const h = rtp.header;
    return {
      header: {
        marker: h.marker,
        payloadType: h.payloadType,
        ssrc: h.ssrc,
        csrc: h.csrc,
        extensionProfile: h.extensionProfile,
        sequenceNumber: (h.sequenceNumber + seg.seqOffset) & 0xffff,
        timestamp: (h.timestamp + seg.tsOffset) >>> 0,
        extensions: this.mapExtensions(rtp, now),
      },
      payload: rtp.payload,
    };
  }

  private switchTo(rid: string, rtp: RtpPacket, desc: Vp8Descriptor, now: number): void {
    const inSeq = rtp.header.sequenceNumber;
    const inTs = rtp.header.timestamp;
    this.segIndex = (this.segIndex + 1) & (SEGMENTS - 1);
    const seg = this.segmentAt(this.segIndex);
    seg.used = true;
    seg.rid = rid;
    if (this.started) {
      const elapsed = Math.max(0, now - this.lastOutAt);
      const tsStep = Math.max(1, Math.round((elapsed * this.up.clockRate) / 1000));
      seg.seqOffset = (this.lastOutSeq + 1 - inSeq) & 0xffff;
      seg.tsOffset = (this.lastOutTs + tsStep - inTs) >>> 0;
      seg.outStart = (this.lastOutSeq + 1) & 0xffff;
    } else {
      seg.seqOffset = 0;
      seg.tsOffset = 0;
      seg.outStart = inSeq;
    }
    seg.inStart = inSeq;
    seg.sent = 0;
    this.lastInSeq = inSeq;
    if (this.up.isVp8 && desc.valid) {
      this.munger.switchTo(desc);
      seg.vp8.pictureId = this.munger.offsets.pictureId;
      seg.vp8.tl0PicIdx = this.munger.offsets.tl0PicIdx;
      seg.vp8.keyIdx = this.munger.offsets.keyIdx;
    }
    this.currentRid = rid;
    this.sourceStartSeq = inSeq;
    this.sinceSwitch = 0;
    this.switches++;
  }

  private mapExtensions(rtp: RtpPacket, now: number): { id: number; payload: Buffer }[] {
    const exts = rtp.header.extensions;
    if (exts.length === 0) return NO_EXTENSIONS;
    if (now - this.extMapAt > EXTENSION_MAP_TTL_MS) {
      this.extMap.fill(-1);
      this.extMapAt = now;
    }
    let out: { id: number; payload: Buffer }[] | undefined;
    for (let i = 0; i < exts.length; i++) {
      const ext = exts[i]!;
      const from = ext.id & 0xff;
      let id = this.extMap[from]!;
      if (id < 0) {
        const uri = this.up.extensionUri(ext.id);
        id = (uri && FORWARDED_EXTENSION_URIS.has(uri) && this.opts.extensionId(uri)) || 0;
        this.extMap[from] = id;
      }
      if (id === 0) continue;
      (out ??= []).push({ id, payload: ext.payload });
    }
    return out ?? NO_EXTENSIONS;
  }
}
