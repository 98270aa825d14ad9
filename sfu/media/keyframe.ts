/**
 * Keyframe start detection on RTP payloads (VP8 RFC 7741, H.264 RFC 6184), for codecs the
 * forwarder does not parse in depth. Audio and unknown codecs: every packet is a start.
 */
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
