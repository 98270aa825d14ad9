/**
 * Every private werift field or method the SFU reads or patches (werift 0.25.2), in one place:
 * the shapes, the checks, and a start-up probe that builds werift's objects once (no socket is
 * bound), checks each shape and logs which fast paths are active. The modules that use them:
 * - fast-send.ts: the RTCRtpSender's sequence/timestamp/RTCP-counter fields, its DTLS
 *   transport's SRTP local context (keys and rollover state, srtp-protect.ts) and the ICE
 *   connection's nominated pair (socket, remote address, consent);
 * - sender-feedback.ts: `handleRtcpPacket` (replaced), RTX fields, `lastSentSRTimestamp`;
 * - srtp-keys.ts: the session keys in each SRTP/SRTCP context, `updateSrtpSession`;
 * - transport.ts: `nackEnabled`/`twccEnabled` of receivers (turned off here,
 *   `turnOffReceiverFeedback`), the PC's `config.icePortRange` (narrowed in place);
 * - werift-guard.ts: StunProtocol.datagramReceived, Connection protocols/nominated/credentials,
 *   the DTLS socket's record layer;
 * - rtp-guard.ts: the exported RtpHeader.deSerialize (wrapped; a public name, listed for
 *   completeness);
 * - no-default-stun.ts: Connection.applyStunTurnServersFromOptions (no default STUN server);
 * - udp-registry.ts: UdpTransport.init (its sockets tracked by port).
 * Each user checks the instance it touches too, and falls back to werift's own (slower) path
 * when the shape is not the one it knows: a werift upgrade degrades to slower, never to wrong.
 *
 * Lifecycle: `installWeriftPatches(logger)` is called by the transport factory: it installs the
 * process-wide patches (idempotent) and probes the rest.
 */
import { RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, SrtpSession, ProtectionProfileAeadAes128Gcm, RtpHeader, useOPUS } from 'werift';
import type { Logger } from '../../common/logger.ts';
import { isSrtpLocalContext } from './srtp-protect.ts';
import { installNoDefaultStun } from './no-default-stun.ts';
import { installRtpHeaderGuard } from './rtp-guard.ts';
import { installUdpRegistry } from './udp-registry.ts';

/** The nominated ICE candidate pair (ice/src/ice.ts CandidatePair). */
export interface PairInternals {
  protocol: { transport: { type: string; closed: boolean; socket: { send(buf: Buffer, port: number, host: string): void } } };
  remoteAddr: readonly [string, number];
  packetsSent: number;
  bytesSent: number;
}

/** werift's RTCDtlsTransport fields the send path reads. */
export interface DtlsInternals {
  state: string;
  srtp?: { localContext?: unknown };
  bytesSent: number;
  packetsSent: number;
  iceTransport: { connection: { nominated?: PairInternals; canSendApplicationData(): boolean } };
}

/** werift RTCRtpSender fields the send and feedback paths read or keep up to date. */
export interface SenderInternals {
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
  rtxPayloadType?: number;
  rtxSequenceNumber: number;
  lastSentSRTimestamp?: number;
}

export function hasSenderShape(s: Partial<SenderInternals>): s is SenderInternals {
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

/**
 * Turns off a publisher-side receiver's own NACK generation and transport-wide feedback (its
 * private `nackEnabled`/`twccEnabled` getters): werift's NACK generator tracks one sequence
 * space per receiver, which simulcast's several SSRCs garble (bogus NACK storms; Upstream
 * tracks loss per layer instead), and its per-receiver TWCC garbles bundled/simulcast feedback
 * (twcc.ts answers instead).
 */
export function turnOffReceiverFeedback(receiver: object): void {
  Object.defineProperty(receiver, 'nackEnabled', { get: () => undefined, configurable: true });
  Object.defineProperty(receiver, 'twccEnabled', { get: () => undefined, configurable: true });
}

export interface WeriftFastPaths {
  /** Forwarded RTP written, protected and sent by fast-send.ts. */
  fastSend: boolean;
  /** SRTP protect with werift's keys but without its per-packet objects (srtp-protect.ts). */
  ownSrtpProtect: boolean;
  /** Session keys imported once as KeyObjects (srtp-keys.ts). */
  srtpKeyObjects: boolean;
  /** The RTP header bound check (rtp-guard.ts). */
  rtpHeaderGuard: boolean;
  /** Shapes that did not match (each disables what needs it). */
  problems: string[];
}

/**
 * Builds a throwaway peer connection with one audio sender and an SRTP session with dummy keys,
 * checks the shapes above and logs the active fast paths (a warning for each one that is off).
 */
export function probeWeriftInternals(logger: Logger): WeriftFastPaths {
  const problems: string[] = [];
  let fastSend = false;
  try {
    const pc = new RTCPeerConnection({ codecs: { audio: [useOPUS()], video: [] }, iceServers: [] });
    const sender = pc.addTransceiver('audio', { direction: 'sendonly' }).sender;
    fastSend = sender instanceof RTCRtpSender && hasSenderShape(sender as unknown as Partial<SenderInternals>);
    if (!fastSend) problems.push('RTCRtpSender fields (sequence/RTCP counters) are not the known ones');
    if (typeof (sender as unknown as { handleRtcpPacket?: unknown }).handleRtcpPacket !== 'function') {
      problems.push('RTCRtpSender.handleRtcpPacket is not a method: subscriber feedback is werift’s');
    }
    const dtls = pc.dtlsTransports[0] as unknown as { updateSrtpSession?: unknown } | undefined;
    if (dtls && typeof dtls.updateSrtpSession !== 'function') problems.push('RTCDtlsTransport.updateSrtpSession is not a method');
    void pc.close().catch(() => undefined);
  } catch (err) {
    problems.push(`a werift peer connection cannot be probed: ${String(err)}`);
  }
  let ownSrtpProtect = false;
  let srtpKeyObjects = false;
  try {
    const key = Buffer.alloc(16, 1);
    const salt = Buffer.alloc(12, 2);
    const session = new SrtpSession({
      keys: { localMasterKey: key, localMasterSalt: salt, remoteMasterKey: key, remoteMasterSalt: salt },
      profile: ProtectionProfileAeadAes128Gcm,
    }) as unknown as { localContext?: { cipher?: { srtpSessionKey?: unknown } } };
    ownSrtpProtect = isSrtpLocalContext(session.localContext);
    srtpKeyObjects = Buffer.isBuffer(session.localContext?.cipher?.srtpSessionKey);
    if (!ownSrtpProtect) problems.push('SRTP context (keys, rollover state) is not the known one');
  } catch (err) {
    problems.push(`a werift SRTP session cannot be probed: ${String(err)}`);
  }
  for (const getter of ['nackEnabled', 'twccEnabled']) {
    if (typeof Object.getOwnPropertyDescriptor(RTCRtpReceiver.prototype, getter)?.get !== 'function') {
      problems.push(`RTCRtpReceiver.${getter} is not a getter: werift's own per-receiver NACK/TWCC may run`);
    }
  }
  const rtpHeaderGuard = typeof RtpHeader.deSerialize === 'function';
  const paths: WeriftFastPaths = { fastSend: fastSend && ownSrtpProtect, ownSrtpProtect, srtpKeyObjects, rtpHeaderGuard, problems };
  if (problems.length > 0) logger.warn({ ...paths }, 'werift internals differ from 0.25.2: some fast paths are off (slower, not wrong)');
  else logger.info({ ...paths }, 'werift fast paths active');
  return paths;
}

/** The process-wide werift patches (each idempotent), then the probe of the per-instance ones. */
export function installWeriftPatches(logger: Logger): WeriftFastPaths {
  installRtpHeaderGuard();
  installNoDefaultStun(logger);
  installUdpRegistry(logger);
  return probeWeriftInternals(logger);
}
