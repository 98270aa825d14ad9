/**
 * A bound in front of werift's RTP header parser. werift's `RtpHeader.deSerialize` trusts the
 * header-extension length field: it walks up to 262,140 bytes past the end of the datagram and
 * appends each element by copying the array, so one 40-byte datagram whose extension length
 * says 0xffff words blocks the event loop for about a minute and a half (0x4000 words: 6 s on
 * our machine). werift parses the header of an SRTP packet before it checks the packet's
 * authentication tag, so the datagram need not be authenticated: anyone who can reach a media
 * port of an established session can send it. `wellFormedRtpHeader` checks in one pass over
 * the extension block that the header fits the datagram and has a bounded number of elements
 * (RFC 3550 §5.1, RFC 8285 §4.2-4.3); `installRtpHeaderGuard` makes werift's parser refuse
 * anything else, which its callers already treat as "drop the packet".
 *
 * Lifecycle: `installRtpHeaderGuard()` is called by the werift transport factory; it patches
 * werift's exported `RtpHeader` class once per process and is idempotent.
 */
import { RtpHeader } from 'werift';

/** More header-extension elements than any sender uses (RFC 8285 has 14 one-byte ids). */
export const MAX_RTP_EXTENSIONS = 32;

const ONE_BYTE_PROFILE = 0xbede;
/** RFC 8285 §4.3: 0x100 plus a 4-bit appbits field. */
const isTwoByteProfile = (p: number) => (p & 0xfff0) === 0x1000;

/** Whether an RTP datagram's fixed header, CSRCs and extension block fit inside it. */
export function wellFormedRtpHeader(buf: Uint8Array): boolean {
  if (buf.length < 12) return false;
  const first = buf[0]!;
  if (first >> 6 !== 2) return false;
  let offset = 12 + (first & 0x0f) * 4;
  if (offset > buf.length) return false;
  if ((first & 0x10) === 0) return true;
  if (offset + 4 > buf.length) return false;
  const profile = (buf[offset]! << 8) | buf[offset + 1]!;
  const end = offset + 4 + ((buf[offset + 2]! << 8) | buf[offset + 3]!) * 4;
  if (end > buf.length) return false;
  offset += 4;
  let elements = 0;
  if (profile === ONE_BYTE_PROFILE) {
    while (offset < end) {
      const b = buf[offset]!;
      if (b === 0) {
        offset++;
        continue;
      }
      if (b >> 4 === 15) break;
      offset += 1 + (b & 0x0f) + 1;
      if (offset > end || ++elements > MAX_RTP_EXTENSIONS) return false;
    }
  } else if (isTwoByteProfile(profile)) {
    while (offset < end) {
      if (buf[offset] === 0) {
        offset++;
        continue;
      }
      if (offset + 2 > end) return false;
      offset += 2 + buf[offset + 1]!;
      if (offset > end || ++elements > MAX_RTP_EXTENSIONS) return false;
    }
  }
  return true;
}

export class MalformedRtpError extends Error {
  constructor() {
    super('malformed RTP header (header extension or CSRC list runs past the datagram)');
    this.name = 'MalformedRtpError';
  }
}

let installed = false;

/** Makes werift's RTP header parser refuse datagrams `wellFormedRtpHeader` rejects. Idempotent. */
export function installRtpHeaderGuard(): void {
  if (installed) return;
  const original = RtpHeader.deSerialize.bind(RtpHeader);
  RtpHeader.deSerialize = (raw: Buffer) => {
    if (!wellFormedRtpHeader(raw)) throw new MalformedRtpError();
    return original(raw);
  };
  installed = true;
}
