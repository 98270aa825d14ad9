/**
 * The send path of forwarded RTP to one subscriber, in place of werift's `RTCRtpSender.sendRtp`.
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
 * werift's RTCP loop reads (packet/octet count, last RTP and NTP time), then SRTP and the ICE pair.
 *
 * It declines (returns false, the caller uses `sender.sendRtp`) whenever the sender is in a state
 * werift handles specially: not connected yet, RED, a pending continuity rewrite after
 * `replaceTrack`, non-zero sequence/timestamp offsets, queued packets, or a negotiated extension it
 * would have to generate other than mid and abs-send-time (transport-cc). It reads werift's
 * private sender fields, so it checks their shape once and declines for good when a werift
 * upgrade changes them: slower, never wrong.
 */
import { RTP_EXTENSION_URI, type RTCRtpSender, type RtpHeader, type RtpPacket } from 'werift';
import type { Logger } from '../../common/logger.ts';

/** Seconds from the NTP epoch (1900) to the Unix epoch (1970). */
const NTP_UNIX_OFFSET_S = 2_208_988_800;
const TWO_POW_32 = 2 ** 32;

interface DtlsInternals {
  state: string;
  srtp: { encrypt(payload: Buffer, header: RtpHeader): Buffer };
  bytesSent: number;
  packetsSent: number;
  iceTransport: { connection: { send(data: Buffer): Promise<void> } };
}

/** werift RTCRtpSender fields this path reads or keeps up to date (private in its typings). */
interface SenderInternals {
  stopped: boolean;
  codec?: { payloadType: number };
  dtlsTransport?: DtlsInternals;
  ssrc: number;
  mid?: string;
  headerExtensions: { id: number; uri: string }[];
  pendingRtpEnabled?: boolean;
  rtpContinuityPending: boolean;
  seqOffset: number;
  timestampOffset: number;
  redRedundantPayloadType?: number;
  sequenceNumber?: number;
  timestamp?: number;
  ntpTimestamp: bigint;
  rtpTimestamp: number;
  octetCount: number;
  headerBytesSent: number;
  packetCount: number;
  rtcpRunning: boolean;
  runRtcp(): Promise<void>;
}

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
  out.writeUIntBE(value, 0, 3);
  return out;
}

function hasExpectedShape(s: SenderInternals): boolean {
  return (
    typeof s.stopped === 'boolean' &&
    typeof s.ssrc === 'number' &&
    Array.isArray(s.headerExtensions) &&
    typeof s.rtpContinuityPending === 'boolean' &&
    typeof s.seqOffset === 'number' &&
    typeof s.timestampOffset === 'number' &&
    typeof s.octetCount === 'number' &&
    typeof s.packetCount === 'number' &&
    typeof s.headerBytesSent === 'number' &&
    typeof s.rtcpRunning === 'boolean' &&
    typeof s.runRtcp === 'function'
  );
}

/** Extensions werift would generate for a sender and this path does not. */
const DECLINED = new Set<string>([RTP_EXTENSION_URI.transportWideCC]);

/**
 * A send function for `sender`: true when the packet went out (or was dropped the way werift
 * drops it: socket errors), false when the caller must use `sender.sendRtp` instead.
 */
export function createFastSend(sender: RTCRtpSender, log: Logger, now: () => number = () => performance.timeOrigin + performance.now()): (rtp: RtpPacket) => boolean {
  const s = sender as unknown as SenderInternals;
  if (!hasExpectedShape(s)) {
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
    const header = rtp.header;
    header.ssrc = s.ssrc;
    header.payloadType = codec.payloadType;
    const t = now();
    const generated: { id: number; payload: Buffer }[] = [];
    if (ext.midId !== undefined && s.mid) {
      if (s.mid !== mid) {
        mid = s.mid;
        midPayload = Buffer.from(mid);
      }
      generated.push({ id: ext.midId, payload: midPayload });
    }
    if (ext.absId !== undefined) generated.push({ id: ext.absId, payload: absSendTime(t) });
    for (const forwarded of header.extensions) {
      const same = generated.find((g) => g.id === forwarded.id);
      if (same) same.payload = forwarded.payload;
      else generated.push(forwarded);
    }
    if (generated.length > 1) generated.sort((a, b) => a.id - b.id);
    header.extensions = generated;
    header.extension = generated.length > 0;

    s.sequenceNumber = header.sequenceNumber;
    s.timestamp = header.timestamp;
    lastNtpMs = t;
    s.rtpTimestamp = header.timestamp;
    s.octetCount += rtp.payload.length;
    s.headerBytesSent += header.serializeSize;
    s.packetCount = (s.packetCount + 1) >>> 0;

    const wire = dtls.srtp.encrypt(rtp.payload, header);
    dtls.bytesSent += wire.length;
    dtls.packetsSent++;
    dtls.iceTransport.connection.send(wire).catch((err: unknown) => log.debug({ err }, 'RTP send failed'));
    if (!s.rtcpRunning) s.runRtcp().catch((err: unknown) => log.debug({ err }, 'sender reports stopped'));
    return true;
  };
}
