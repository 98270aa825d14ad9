/**
 * RTCP from a subscriber about one of our senders. werift's own handling is replaced for the
 * feedback the SFU must answer itself: NACKs are answered from the track's shared cache
 * (werift's 128-packet per-sender cache would answer them too, twice) with RTX when
 * negotiated; PLI/FIR become one rate-limited keyframe request of the layer this subscriber
 * receives. Everything else (receiver reports, REMB) still reaches werift, read on the way:
 * receiver reports about this sender (`ReceiverReportState`: loss, jitter, RTT against the
 * sender reports werift sends, which are remembered here) for connection quality and the stream
 * metrics, REMB for the subscriber's bandwidth estimate.
 *
 * Retransmissions are bounded as LiveKit bounds them (pkg/sfu/sequencer.go: ignoreRetransmission
 * 100 ms, maxAck 3): a packet NACKed again within 100 ms of its last retransmission is not sent
 * again, and no packet is retransmitted more than 3 times, so a subscriber repeating NACKs
 * cannot multiply the SFU's upstream of it.
 */
import {
  GenericNack,
  PictureLossIndication,
  ReceiverEstimatedMaxBitrate,
  RtcpPayloadSpecificFeedback,
  RtcpRrPacket,
  RtcpSrPacket,
  RtcpTransportLayerFeedback,
  wrapRtx,
  type RTCRtpSender,
  type RtcpPacket,
  type RtpPacket,
} from 'werift';
import type { Logger } from '../../common/logger.ts';
import type { DownForwarder } from './forwarder.ts';
import type { WeriftTransportConfig } from './peer-config.ts';
import { compactNtp, type ReceiverReportState } from './link-stats.ts';
import type { SenderInternals } from './werift-internals.ts';

/** RTCP PSFB format of a Full Intra Request (RFC 5104); werift does not export its class. */
const FIR_FMT = 4;

/** A packet NACKed again within this long of its last retransmission is not resent (LiveKit). */
export const NACK_REPEAT_IGNORE_MS = 100;
/** Retransmissions of one packet at most (LiveKit's maxAck). */
export const NACK_MAX_RETRANSMITS = 3;
/** Sequence numbers remembered (a power of two; more than the packet cache holds). */
const NACK_GUARD_SLOTS = 2048;

/**
 * Which NACKed packets may be retransmitted now (see the file comment). Remembers the last
 * `NACK_GUARD_SLOTS` sequence numbers in fixed arrays: no growth whatever the subscriber sends.
 * The arrays (27 KB) are made at the first NACK: most downtracks never get one (audio is not
 * negotiated with NACK), and one guard per downtrack per subscriber was the largest part of the
 * SFU's memory per participant.
 */
export class NackGuard {
  /** The three slot arrays, made together at the first NACK. */
  private history: { seqs: Int32Array; lastAt: Float64Array; sent: Uint8Array } | undefined;

  /** Bytes of history held (0 until the first NACK). */
  get allocatedBytes(): number {
    const h = this.history;
    return h ? h.seqs.byteLength + h.lastAt.byteLength + h.sent.byteLength : 0;
  }

  /** Whether `seq` may be retransmitted at `nowMs`; counts the retransmission when it may. */
  allow(seq: number, nowMs: number): boolean {
    const { seqs, lastAt, sent } = (this.history ??= {
      seqs: new Int32Array(NACK_GUARD_SLOTS).fill(-1),
      lastAt: new Float64Array(NACK_GUARD_SLOTS),
      sent: new Uint8Array(NACK_GUARD_SLOTS),
    });
    const slot = seq & (NACK_GUARD_SLOTS - 1);
    if (seqs[slot] !== seq) {
      seqs[slot] = seq;
      sent[slot] = 0;
    } else if (sent[slot]! >= NACK_MAX_RETRANSMITS || nowMs - lastAt[slot]! < NACK_REPEAT_IGNORE_MS) {
      return false;
    }
    sent[slot]! += 1;
    lastAt[slot] = nowMs;
    return true;
  }
}

export interface FeedbackCounts {
  nacks: number;
  keyframeRequests: number;
}

export interface SenderFeedbackOptions {
  sender: RTCRtpSender;
  forwarder: DownForwarder;
  counts: FeedbackCounts;
  metrics: WeriftTransportConfig['metrics'];
  log: Logger;
  /** Whether the subscriber transport is up (retransmissions are not sent before). */
  connected: () => boolean;
  /** Receiver-report state of this downtrack. */
  reports: ReceiverReportState;
  kind: 'audio' | 'video';
  /** Wall-clock ms (werift stamps its SRs with Date.now, so RTT needs the same clock). */
  wallNow: () => number;
  /** A REMB from the subscriber: its available downlink bandwidth in bits/s. */
  onEstimate: (bps: number) => void;
}

/** Routes `sender`'s subscriber feedback to the forwarder (see the file comment). */
export function takeOverSenderFeedback(opts: SenderFeedbackOptions): void {
  const { sender, forwarder, counts, metrics, log } = opts;
  const original = sender.handleRtcpPacket.bind(sender);
  const guard = new NackGuard();
  rememberSenderReports(sender, opts.reports, opts.wallNow);
  sender.handleRtcpPacket = (packet: RtcpPacket) => {
    try {
      if (packet instanceof RtcpRrPacket || packet instanceof RtcpSrPacket) {
        readReceiverReports(opts, opts.reports, packet);
        original(packet);
        return;
      }
      if (packet instanceof RtcpTransportLayerFeedback && packet.feedback instanceof GenericNack) {
        counts.nacks++;
        metrics?.rtcp.nack('incoming');
        const now = opts.wallNow();
        for (const seq of nackedSequenceNumbers(packet.feedback)) {
          if (!guard.allow(seq, now)) continue;
          const rtp = forwarder.retransmit(seq);
          if (rtp) sendRetransmission(opts, rtp);
        }
        sender.onRtcp.execute(packet);
        return;
      }
      if (packet instanceof RtcpPayloadSpecificFeedback) {
        const fb = packet.feedback;
        const fir = fb.count === FIR_FMT;
        if (fb instanceof PictureLossIndication || fir) {
          counts.keyframeRequests++;
          if (fir) metrics?.rtcp.fir('incoming');
          else metrics?.rtcp.pli('incoming');
          forwarder.requestKeyframe();
          sender.onRtcp.execute(packet);
          return;
        }
        if (fb instanceof ReceiverEstimatedMaxBitrate) opts.onEstimate(Number(fb.bitrate));
      }
    } catch (err) {
      log.debug({ err }, 'subscriber feedback failed');
      return;
    }
    original(packet);
  };
}

/**
 * Records each SR werift sends (its RTCP loop sets the SR's NTP time, then
 * `lastSentSRTimestamp`): an accessor on that field sees every one.
 */
function rememberSenderReports(sender: RTCRtpSender, reports: ReceiverReportState, wallNow: () => number): void {
  const internals = sender as unknown as SenderInternals;
  let sentAt = internals.lastSentSRTimestamp;
  Object.defineProperty(sender, 'lastSentSRTimestamp', {
    configurable: true,
    enumerable: true,
    get: () => sentAt,
    set: (seconds: number | undefined) => {
      sentAt = seconds;
      if (seconds !== undefined) reports.srs.add(compactNtp(internals.ntpTimestamp), wallNow());
    },
  });
}

/** Applies the report blocks about this sender; feeds the stream metrics. */
function readReceiverReports(opts: SenderFeedbackOptions, reports: ReceiverReportState, packet: RtcpRrPacket | RtcpSrPacket): void {
  const ssrc = opts.sender.ssrc;
  const clockRate = opts.sender.codec?.clockRate ?? 0;
  const kind = opts.kind;
  const streams = opts.metrics?.streams;
  for (const block of packet.reports) {
    if (block.ssrc !== ssrc) continue;
    const r = reports.onReport(block, opts.wallNow(), clockRate);
    if (!streams) continue;
    if (r.expected > 0) streams.packetLoss('outgoing', kind, r.lost, r.expected);
    streams.jitter('outgoing', kind, reports.jitterUs);
    if (r.rttMs !== undefined) streams.rtt('outgoing', kind, r.rttMs);
  }
}

/** Sends a cached packet again on the sender's stream (RTX-wrapped when negotiated). */
function sendRetransmission(opts: SenderFeedbackOptions, rtp: RtpPacket): void {
  const { sender, metrics, log } = opts;
  const codec = sender.codec;
  const dtls = sender.dtlsTransport;
  if (!codec || !dtls || sender.stopped || !opts.connected()) return;
  rtp.header.ssrc = sender.ssrc;
  rtp.header.payloadType = codec.payloadType;
  let out = rtp;
  const internals = sender as unknown as SenderInternals;
  if (internals.rtxPayloadType !== undefined) {
    out = wrapRtx(rtp, internals.rtxPayloadType, internals.rtxSequenceNumber, sender.rtxSsrc);
    internals.rtxSequenceNumber = (internals.rtxSequenceNumber + 1) & 0xffff;
  }
  metrics?.packets.outgoing(out.payload.length, true);
  dtls.sendRtp(out.payload, out.header).catch((err: unknown) => log.debug({ err }, 'retransmission failed'));
}

/**
 * The sequence numbers a generic NACK asks for. werift parses FCI entries to the end of the
 * buffer it is given, which can run past this packet (we saw random "lost" lists after the real
 * entry), so only the entries the RTCP header's length covers are taken; werift also does not
 * wrap `pid + n` at 16 bits.
 */
export function nackedSequenceNumbers(nack: GenericNack): number[] {
  const words = nack.header?.length;
  const entries = words !== undefined && words >= 2 ? words - 2 : Number.POSITIVE_INFINITY;
  const out: number[] = [];
  let pid = -1;
  let seen = 0;
  for (const raw of nack.lost) {
    const delta = raw - pid;
    if (pid < 0 || delta < 1 || delta > 16) {
      if (++seen > entries) break;
      pid = raw;
    }
    out.push(raw & 0xffff);
  }
  return out;
}
