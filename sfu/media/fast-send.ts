/**
 * The send path of forwarded RTP to one subscriber, in place of werift's `RTCRtpSender.sendRtp`:
 * one header written into the packet's wire buffer, one SRTP protect (srtp-protect.ts, with
 * werift's session keys and rollover state), one `dgram` send on the ICE pair's socket.
 *
 * werift's path clones every packet again, rebuilds the header extension list with
 * map/filter/sort, formats a wall-clock NTP time through strings for every packet, keeps a
 * 128-packet cache the SFU does not use (NACKs are answered from the track's shared cache) and
 * chains three promises per packet. Its NTP time is also wrong: the fraction is the decimal
 * digits after the point read as an integer, so the sender reports' NTP times and the
 * abs-send-time extension keep only whole seconds (receivers' audio/video sync and their
 * bandwidth estimation read those). This path writes the same wire packet with a correct NTP
 * time: SSRC, payload type, the sender's `sdes:mid` and `abs-send-time` extensions merged with the
 * forwarded ones (forwarded payloads win, ids sorted, as werift does), the sender-report counters
 * werift's RTCP loop reads (packet/octet count, last RTP and NTP time), then SRTP and the ICE pair
 * (its consent and statistics kept as werift keeps them). Never the padding bit: padding is
 * not forwarded.
 *
 * It declines (returns false, the caller uses `sender.sendRtp`) whenever the sender is in a state
 * werift handles specially: not connected yet, RED, a pending continuity rewrite after
 * `replaceTrack`, non-zero sequence/timestamp offsets, queued packets, or a negotiated extension it
 * would have to generate other than mid and abs-send-time (transport-cc), an extension profile
 * other than one-byte/two-byte or elements that do not fit it, a TCP/TURN pair. It reads werift's
 * private fields (werift-internals.ts), so it checks their shape once per sender and per SRTP
 * session and declines for good when a werift upgrade changes them: slower, never wrong.
 */
import { isIP } from 'node:net';
import { RTP_EXTENSION_URI, type RTCRtpSender } from 'werift';
import type { Logger } from '../../common/logger.ts';
import type { ForwardedPacket } from './downtrack.ts';
import { createProtector, type RtpProtector } from './srtp-protect.ts';
import { hasSenderShape, type SenderInternals } from './werift-internals.ts';

/** Seconds from the NTP epoch (1900) to the Unix epoch (1970). */
const NTP_UNIX_OFFSET_S = 2_208_988_800;
const TWO_POW_32 = 2 ** 32;

/** Unix milliseconds as a 64-bit NTP timestamp (seconds since 1900 . 32-bit fraction). */
export function ntpFromUnixMs(ms: number): bigint {
  const seconds = ms / 1000 + NTP_UNIX_OFFSET_S;
  const whole = Math.floor(seconds);
  const fraction = Math.floor((seconds - whole) * TWO_POW_32);
  return (BigInt(whole) << 32n) | BigInt(fraction);
}

/** The 24-bit abs-send-time (6.18 fixed-point seconds) of a Unix time in milliseconds. */
export function absSendTime(ms: number, out: Buffer = Buffer.alloc(3)): Buffer {
  const value = Math.floor((ms / 1000 + NTP_UNIX_OFFSET_S) * 262_144) % 0x1000000;
  out[0] = value >>> 16;
  out[1] = (value >>> 8) & 0xff;
  out[2] = value & 0xff;
  return out;
}

/** Extensions werift would generate for a sender and this path does not. */
const DECLINED = new Set<string>([RTP_EXTENSION_URI.transportWideCC]);

const ONE_BYTE = 0xbede;
const TWO_BYTE = 0x1000;
const MAX_EXTENSIONS = 16;

interface Element {
  id: number;
  payload: Buffer;
}

/**
 * Writes the RTP header of `h` (with `ssrc`/`pt`, the extension `elements` sorted by id) into
 * `wire` from offset 0, as werift's `RtpHeader.serialize` lays it out; returns its length.
 */
export function writeRtpHeader(
  wire: Buffer,
  h: ForwardedPacket['header'],
  ssrc: number,
  pt: number,
  profile: number,
  elements: readonly Element[],
  count: number,
): number {
  const csrc = h.csrc;
  wire[0] = 0x80 | (count > 0 ? 0x10 : 0) | csrc.length;
  wire[1] = (h.marker ? 0x80 : 0) | (pt & 0x7f);
  wire.writeUInt16BE(h.sequenceNumber, 2);
  wire.writeUInt32BE(h.timestamp >>> 0, 4);
  wire.writeUInt32BE(ssrc >>> 0, 8);
  let o = 12;
  for (let i = 0; i < csrc.length; i++, o += 4) wire.writeUInt32BE(csrc[i]! >>> 0, o);
  if (count === 0) return o;
  const extHeader = o;
  wire.writeUInt16BE(profile, o);
  o += 4;
  const start = o;
  for (let i = 0; i < count; i++) {
    const e = elements[i]!;
    if (profile === ONE_BYTE) wire[o++] = (e.id << 4) | (e.payload.length - 1);
    else {
      wire[o++] = e.id;
      wire[o++] = e.payload.length;
    }
    e.payload.copy(wire, o);
    o += e.payload.length;
  }
  const size = o - start;
  const rounded = (size + 3) & ~3;
  for (; o < start + rounded; o++) wire[o] = 0;
  wire.writeUInt16BE(rounded >> 2, extHeader + 2);
  return o;
}

/** Header length for `count` elements in `profile` (0 when the elements do not fit it). */
function headerLength(csrcCount: number, profile: number, elements: readonly Element[], count: number): number {
  let n = 12 + csrcCount * 4;
  if (count === 0) return n;
  let ext = 0;
  for (let i = 0; i < count; i++) {
    const e = elements[i]!;
    const len = e.payload.length;
    if (profile === ONE_BYTE) {
      if (e.id < 1 || e.id > 14 || len < 1 || len > 16) return 0;
      ext += 1 + len;
    } else {
      if (e.id < 1 || e.id > 255 || len > 255) return 0;
      ext += 2 + len;
    }
  }
  return n + 4 + ((ext + 3) & ~3);
}

/**
 * A send function for `sender`: true when the packet went out (or was dropped the way werift
 * drops it: no consent, closed socket), false when the caller must use `sender.sendRtp` instead.
 */
export function createFastSend(
  sender: RTCRtpSender,
  log: Logger,
  now: () => number = () => performance.timeOrigin + performance.now(),
): (rtp: ForwardedPacket) => boolean {
  const s = sender as unknown as SenderInternals;
  if (!hasSenderShape(s)) {
    log.warn('werift RTCRtpSender of an unknown shape: forwarding uses its own (slower) send path');
    return () => false;
  }
  let lastNtpMs = 0;
  // SR NTP times are read rarely (once per report), so they are computed when read.
  Object.defineProperty(s, 'ntpTimestamp', {
    configurable: true,
    enumerable: true,
    get: () => (lastNtpMs > 0 ? ntpFromUnixMs(lastNtpMs) : 0n),
    set: (value: bigint) => {
      // werift's own path stores its (whole-second) NTP time; keep the real clock instead.
      if (typeof value === 'bigint' && value !== 0n) lastNtpMs = now();
    },
  });

  let extensionsFor: { list: { id: number; uri: string }[]; midId?: number; absId?: number; ok: boolean } | undefined;
  let mid: string | undefined;
  let midPayload = Buffer.alloc(0);
  const absPayload = Buffer.alloc(3);
  const plan = () => {
    const list = s.headerExtensions;
    if (extensionsFor?.list === list) return extensionsFor;
    let ok = true;
    let midId: number | undefined;
    let absId: number | undefined;
    for (const ext of list) {
      if (DECLINED.has(ext.uri)) ok = false;
      else if (ext.uri === RTP_EXTENSION_URI.sdesMid) midId = ext.id;
      else if (ext.uri === RTP_EXTENSION_URI.absSendTime) absId = ext.id;
    }
    extensionsFor = { list, midId, absId, ok };
    return extensionsFor;
  };
  // The SRTP session's protector, remade when werift makes a new session (a new handshake).
  let srtpContext: unknown;
  let protector: RtpProtector | undefined;
  // The ICE pair werift sends on, checked when it changes.
  let pairFor: unknown;
  let pairOk = false;
  let warned = false;
  const elements: Element[] = Array.from({ length: MAX_EXTENSIONS }, () => ({ id: 0, payload: absPayload }));

  return (rtp) => {
    const dtls = s.dtlsTransport;
    const codec = s.codec;
    if (
      s.stopped ||
      !codec ||
      !dtls ||
      dtls.state !== 'connected' ||
      s.pendingRtpEnabled ||
      s.rtpContinuityPending ||
      s.seqOffset !== 0 ||
      s.timestampOffset !== 0 ||
      s.redRedundantPayloadType !== undefined
    ) {
      return false;
    }
    const ext = plan();
    if (!ext.ok) return false;
    const context = dtls.srtp?.localContext;
    if (context !== srtpContext) {
      srtpContext = context;
      protector = createProtector(context);
      if (!protector && !warned) {
        warned = true;
        log.warn('werift SRTP context of an unknown shape: forwarding uses its own (slower) send path');
      }
    }
    if (!protector) return false;
    const connection = dtls.iceTransport.connection;
    const pair = connection.nominated;
    if (pair !== pairFor) {
      pairFor = pair;
      const transport = pair?.protocol?.transport;
      pairOk =
        pair !== undefined &&
        transport?.type === 'udp' &&
        typeof transport.socket?.send === 'function' &&
        Array.isArray(pair.remoteAddr) &&
        isIP(pair.remoteAddr[0]) !== 0 &&
        typeof pair.packetsSent === 'number' &&
        typeof connection.canSendApplicationData === 'function';
    }
    if (!pairOk || !pair) return false;

    // Extensions: the sender's own (mid, abs-send-time), then the forwarded ones; same id: forwarded wins.
    const h = rtp.header;
    const t = now();
    let count = 0;
    if (ext.midId !== undefined && s.mid) {
      if (s.mid !== mid) {
        mid = s.mid;
        midPayload = Buffer.from(mid);
      }
      const e = elements[count++]!;
      e.id = ext.midId;
      e.payload = midPayload;
    }
    if (ext.absId !== undefined) {
      const e = elements[count++]!;
      e.id = ext.absId;
      e.payload = absSendTime(t, absPayload);
    }
    const forwarded = h.extensions;
    for (let i = 0; i < forwarded.length; i++) {
      const f = forwarded[i]!;
      let j = 0;
      while (j < count && elements[j]!.id !== f.id) j++;
      if (j === count) {
        if (count === MAX_EXTENSIONS) return false;
        count++;
      }
      elements[j]!.id = f.id;
      elements[j]!.payload = f.payload;
    }
    // Insertion sort by id (a handful of elements).
    for (let i = 1; i < count; i++) {
      const e = elements[i]!;
      const id = e.id;
      const payload = e.payload;
      let j = i - 1;
      for (; j >= 0 && elements[j]!.id > id; j--) {
        elements[j + 1]!.id = elements[j]!.id;
        elements[j + 1]!.payload = elements[j]!.payload;
      }
      elements[j + 1]!.id = id;
      elements[j + 1]!.payload = payload;
    }
    const profile = count === 0 ? ONE_BYTE : h.extensionProfile;
    if (profile !== ONE_BYTE && profile !== TWO_BYTE) return false;
    const hl = headerLength(h.csrc.length, profile, elements, count);
    if (hl === 0) return false;

    const payload = rtp.payload;
    const wire = Buffer.allocUnsafe(hl + payload.length + protector.tagLength);
    writeRtpHeader(wire, h, s.ssrc, codec.payloadType, profile, elements, count);
    protector.protect(wire, hl, payload, s.ssrc, h.sequenceNumber);

    s.sequenceNumber = h.sequenceNumber;
    s.timestamp = h.timestamp;
    lastNtpMs = t;
    s.rtpTimestamp = h.timestamp;
    s.octetCount += payload.length;
    s.headerBytesSent += hl;
    s.packetCount = (s.packetCount + 1) >>> 0;
    dtls.bytesSent += wire.length;
    dtls.packetsSent++;
    if (!s.rtcpRunning) s.runRtcp().catch((err: unknown) => log.debug({ err }, 'sender reports stopped'));

    // RFC 7675: no application data on a pair without fresh consent (werift's rule too).
    if (!connection.canSendApplicationData()) return true;
    const transport = pair.protocol.transport;
    if (transport.closed) return true;
    try {
      transport.socket.send(wire, pair.remoteAddr[1], pair.remoteAddr[0]);
    } catch (err) {
      log.debug({ err }, 'RTP send failed');
      return true;
    }
    pair.packetsSent++;
    pair.bytesSent += wire.length;
    return true;
  };
}
