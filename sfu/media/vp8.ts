/**
 * VP8 RTP payload descriptor (RFC 7741 §4.2) reading and the per-subscriber picture-id munger.
 * Each simulcast layer numbers its pictures (PictureID, TL0PICIDX, KEYIDX) on its own, so a
 * subscriber moved from one layer to another would see those counters jump; the decoder then
 * assumes lost frames. `Vp8Munger` keeps them continuous by adding per-switch offsets, exactly
 * like the RTP sequence number and timestamp. Only descriptor bytes change, never the VP8 frame
 * itself (E2EE: the descriptor is outside the encrypted frame).
 *
 * Hot path: `parseVp8Descriptor` fills a caller-owned object (no allocation); `rewrite` copies
 * the payload only when an offset is non-zero (never before the first layer switch).
 */

/** Parsed descriptor fields; -1 offsets mean "absent". Reused between packets. */
export interface Vp8Descriptor {
  /** Payload is long enough to hold the descriptor it announces. */
  valid: boolean;
  /** S bit with partition index 0: first packet of a frame. */
  frameStart: boolean;
  /** First packet of a keyframe (frame start and the VP8 header's P bit clear). */
  keyframe: boolean;
  /** Byte offset of the PictureID, -1 when absent. */
  pictureIdAt: number;
  /** 7 or 15 (bits), 0 when absent. */
  pictureIdBits: number;
  pictureId: number;
  /** Byte offset of TL0PICIDX, -1 when absent. */
  tl0At: number;
  tl0PicIdx: number;
  /** Byte offset of the TID/Y/KEYIDX byte, -1 when absent. */
  tkAt: number;
  /** K bit: KEYIDX present. */
  hasKeyIdx: boolean;
  keyIdx: number;
  /** Descriptor length in bytes (the VP8 payload header follows). */
  size: number;
}

export function newVp8Descriptor(): Vp8Descriptor {
  return {
    valid: false,
    frameStart: false,
    keyframe: false,
    pictureIdAt: -1,
    pictureIdBits: 0,
    pictureId: 0,
    tl0At: -1,
    tl0PicIdx: 0,
    tkAt: -1,
    hasKeyIdx: false,
    keyIdx: 0,
    size: 0,
  };
}

/** Fills `d` from `payload`; returns `d.valid`. */
export function parseVp8Descriptor(payload: Uint8Array, d: Vp8Descriptor): boolean {
  d.valid = false;
  d.frameStart = false;
  d.keyframe = false;
  d.pictureIdAt = -1;
  d.pictureIdBits = 0;
  d.pictureId = 0;
  d.tl0At = -1;
  d.tl0PicIdx = 0;
  d.tkAt = -1;
  d.hasKeyIdx = false;
  d.keyIdx = 0;
  d.size = 0;
  const len = payload.length;
  if (len < 1) return false;
  const b0 = payload[0]!;
  let i = 1;
  if (b0 & 0x80) {
    if (len < 2) return false;
    const x = payload[1]!;
    i = 2;
    if (x & 0x80) {
      if (i >= len) return false;
      d.pictureIdAt = i;
      if (payload[i]! & 0x80) {
        if (i + 1 >= len) return false;
        d.pictureIdBits = 15;
        d.pictureId = ((payload[i]! & 0x7f) << 8) | payload[i + 1]!;
        i += 2;
      } else {
        d.pictureIdBits = 7;
        d.pictureId = payload[i]! & 0x7f;
        i += 1;
      }
    }
    if (x & 0x40) {
      if (i >= len) return false;
      d.tl0At = i;
      d.tl0PicIdx = payload[i]!;
      i += 1;
    }
    if (x & 0x30) {
      if (i >= len) return false;
      d.tkAt = i;
      d.hasKeyIdx = (x & 0x10) !== 0;
      d.keyIdx = payload[i]! & 0x1f;
      i += 1;
    }
  }
  d.size = i;
  d.valid = true;
  d.frameStart = (b0 & 0x10) !== 0 && (b0 & 0x07) === 0;
  d.keyframe = d.frameStart && i < len && (payload[i]! & 0x01) === 0;
  return true;
}

/** Offsets applied to one stretch of forwarded packets (between two layer switches). */
export interface Vp8Offsets {
  pictureId: number;
  tl0PicIdx: number;
  keyIdx: number;
}

/**
 * Per-subscriber VP8 counter continuity. Lifecycle: `switchTo(d)` at the keyframe that starts a
 * new source layer (offsets re-based on the last values sent), `rewrite(payload, d)` for every
 * packet forwarded; `offsets` is the current stretch (copied by the caller for retransmissions).
 */
export class Vp8Munger {
  readonly offsets: Vp8Offsets = { pictureId: 0, tl0PicIdx: 0, keyIdx: 0 };
  private started = false;
  private lastPictureId = 0;
  private lastTl0 = 0;
  private lastKeyIdx = 0;

  /** Rebases the offsets so `d` (the new layer's first packet) follows the last packet sent. */
  switchTo(d: Vp8Descriptor): void {
    if (!this.started) {
      this.offsets.pictureId = 0;
      this.offsets.tl0PicIdx = 0;
      this.offsets.keyIdx = 0;
      return;
    }
    if (d.pictureIdAt >= 0) this.offsets.pictureId = (this.lastPictureId + 1 - d.pictureId) & 0x7fff;
    if (d.tl0At >= 0) this.offsets.tl0PicIdx = (this.lastTl0 + 1 - d.tl0PicIdx) & 0xff;
    if (d.hasKeyIdx) this.offsets.keyIdx = (this.lastKeyIdx + 1 - d.keyIdx) & 0x1f;
  }

  /** The payload to send: `payload` itself when nothing changes, else a rewritten copy. */
  rewrite(payload: Buffer, d: Vp8Descriptor, offsets: Vp8Offsets = this.offsets, track = true): Buffer {
    if (!d.valid) return payload;
    const pid = d.pictureIdAt >= 0 ? (d.pictureId + offsets.pictureId) & (d.pictureIdBits === 15 ? 0x7fff : 0x7f) : -1;
    const tl0 = d.tl0At >= 0 ? (d.tl0PicIdx + offsets.tl0PicIdx) & 0xff : -1;
    const key = d.hasKeyIdx ? (d.keyIdx + offsets.keyIdx) & 0x1f : -1;
    if (track) {
      // Remember the newest values sent (modular comparison tolerates reordering).
      if (pid >= 0 && (!this.started || ((pid - this.lastPictureId) & 0x7fff) < 0x4000)) this.lastPictureId = pid;
      if (tl0 >= 0 && (!this.started || ((tl0 - this.lastTl0) & 0xff) < 0x80)) this.lastTl0 = tl0;
      if (key >= 0) this.lastKeyIdx = key;
      this.started = true;
    }
    if (offsets.pictureId === 0 && offsets.tl0PicIdx === 0 && offsets.keyIdx === 0) return payload;
    const out = Buffer.from(payload);
    if (pid >= 0) {
      if (d.pictureIdBits === 15) {
        out[d.pictureIdAt] = 0x80 | (pid >> 8);
        out[d.pictureIdAt + 1] = pid & 0xff;
      } else {
        out[d.pictureIdAt] = pid;
      }
    }
    if (tl0 >= 0) out[d.tl0At] = tl0;
    if (key >= 0) out[d.tkAt] = (out[d.tkAt]! & 0xe0) | key;
    return out;
  }
}
