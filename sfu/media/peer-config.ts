/**
 * How the SFU's werift peer connections are configured: codecs, header extensions, ICE
 * addresses and ports (each choice says why, against werift-webrtc 0.25.2's behaviour), plus the
 * transport's configuration type and LiveKit's canonical mime spellings.
 */
import { networkInterfaces } from 'node:os';
import { isIP } from 'node:net';
import {
  RTCCertificate,
  RTCDtlsTransport,
  RTCPeerConnection,
  RTCRtpCodecParameters,
  useAbsSendTime,
  useAudioLevelIndication,
  useNACK,
  useOPUS,
  usePLI,
  useSdesMid,
  useSdesRTPStreamId,
  useTransportWideCC,
  useTWCC,
  useVP8,
  useVideoOrientation,
  type PeerConfig,
} from 'werift';
import type { PacketTap } from './forwarder.ts';
import type { FastHistogram, RtcpMetrics, PacketMetrics, StreamMetrics, TransportMetrics } from '../metrics.ts';

export interface WeriftTransportConfig {
  portRange: [number, number];
  /** Address advertised in candidates; '' = every host address werift finds. */
  nodeIp: string;
  /** Optional observer of forwarded payloads (tests, diagnostics). */
  tap?: PacketTap;
  /**
   * Test hook on the send path to subscribers: returning true drops that packet (first
   * transmissions only; retransmissions answering NACKs always go out). Simulates downlink loss.
   */
  dropOutgoing?: (packet: { subscriber: string; kind: 'audio' | 'video'; sequenceNumber: number }) => boolean;
  /**
   * SFU metrics (sfu/metrics.ts) for NACK/PLI/retransmission counts and, when given, link
   * quality (loss/jitter/RTT per interval or receiver report) and forward latency; optional.
   */
  metrics?: {
    rtcp: RtcpMetrics;
    packets: PacketMetrics;
    streams?: StreamMetrics;
    forwardLatency?: FastHistogram;
    /** Guard drops, transport failures, UDP ports (sfu/metrics.ts TransportMetrics). */
    transport?: TransportMetrics;
  };
  /** Observer of each peer connection made (tests, diagnostics); must not change it. */
  observePeerConnection?: (pc: RTCPeerConnection, role: 'publisher' | 'subscriber') => void;
  /**
   * The DTLS certificate of every peer connection. Without it werift makes one per thread on the
   * first connection; media workers are given the process's (see dtlsKeysOfProcess).
   */
  certificate?: RTCCertificate;
}

/** A DTLS certificate as text, to hand to another thread. */
export interface DtlsKeys {
  keyPem: string;
  certPem: string;
  signatureHash: RTCCertificate['signatureHash'];
}

/**
 * The process's DTLS certificate (werift's own: ECDSA P-256, made once per thread), as text for
 * media workers. A worker must never make its own: Node 24 aborts the whole process when a worker
 * is terminated while WebCrypto key generation is pending on it (crypto_keygen.h, "Assertion
 * failed: try_catch.CanContinue()"), and the pool terminates workers on shutdown and replacement.
 */
export async function dtlsKeysOfProcess(): Promise<DtlsKeys> {
  const cert = await RTCDtlsTransport.SetupCertificate();
  return { keyPem: cert.privateKey, certPem: cert.certPem, signatureHash: cert.signatureHash };
}

export function certificateOf(keys: DtlsKeys): RTCCertificate {
  return new RTCCertificate(keys.keyPem, keys.certPem, keys.signatureHash);
}

const RTX_ENABLED = true;

/** LiveKit's canonical mime spellings (clients compare them, e.g. for E2EE). */
export function canonicalMime(mime: string): string {
  const lower = mime.toLowerCase();
  if (lower === 'audio/opus') return 'audio/opus';
  if (lower === 'video/vp8') return 'video/VP8';
  if (lower === 'video/h264') return 'video/H264';
  if (lower === 'video/vp9') return 'video/VP9';
  if (lower === 'video/av1') return 'video/AV1';
  return mime;
}

function isLocalAddress(ip: string): boolean {
  if (ip.startsWith('127.') || ip === '::1') return true;
  for (const list of Object.values(networkInterfaces())) {
    for (const addr of list ?? []) if (addr.address === ip) return true;
  }
  return false;
}

/** The socket werift binds for one of its ICE agents (peerConfig's choices), for probing a port. */
export function iceSocketOf(nodeIp: string): { type: 'udp4' | 'udp6'; address?: string } {
  const family = isIP(nodeIp);
  if (family === 0) return { type: 'udp4' };
  const type = family === 6 ? 'udp6' : 'udp4';
  return isLocalAddress(nodeIp) ? { type, address: nodeIp } : { type };
}

export function peerConfig(cfg: WeriftTransportConfig, role: 'publisher' | 'subscriber'): Partial<PeerConfig> {
  // RTX only towards subscribers: werift cannot route rid-simulcast RTX from publishers.
  // Publishers get transport-cc (answered by twcc.ts) instead of goog-remb, which nothing sends:
  // without feedback Chrome's encoder never ramps up to the high simulcast layer.
  const vp8 = role === 'publisher' ? useVP8({ rtcpFeedback: [useNACK(), usePLI(), useTWCC()] }) : useVP8();
  const video =
    role === 'subscriber' && RTX_ENABLED
      ? [vp8, new RTCRtpCodecParameters({ mimeType: 'video/rtx', clockRate: 90000 })]
      : [vp8];
  const base: Partial<PeerConfig> = {
    codecs: { audio: [useOPUS()], video },
    headerExtensions:
      role === 'publisher'
        ? {
            audio: [useSdesMid(), useAudioLevelIndication()],
            video: [useSdesMid(), useSdesRTPStreamId(), useVideoOrientation(), useTransportWideCC()],
          }
        : {
            audio: [useSdesMid(), useAbsSendTime(), useAudioLevelIndication()],
            video: [useSdesMid(), useAbsSendTime(), useVideoOrientation()],
          },
    iceServers: [],
    // A copy per PC: the transport narrows it in place to the PC's leased ports (port-pool.ts).
    icePortRange: [cfg.portRange[0], cfg.portRange[1]],
    bundlePolicy: 'max-bundle',
    iceUseTcp: false,
    ...(cfg.certificate ? { certificates: [cfg.certificate] } : {}),
  };
  if (cfg.nodeIp && isIP(cfg.nodeIp)) {
    base.iceUseIpv4 = false;
    base.iceUseIpv6 = false;
    base.iceAdditionalHostAddresses = [cfg.nodeIp];
    if (isLocalAddress(cfg.nodeIp)) {
      base.iceInterfaceAddresses = isIP(cfg.nodeIp) === 6 ? { udp6: cfg.nodeIp } : { udp4: cfg.nodeIp };
    }
  }
  return base;
}

/** Resolves once ICE gathering is complete (or after `timeoutMs`; the SDP then lists what was found). */
export async function gatheringComplete(pc: RTCPeerConnection, timeoutMs = 5000): Promise<void> {
  if (pc.iceGatheringState === 'complete') return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      unsubscribe();
      resolve();
    }, timeoutMs);
    const { unSubscribe: unsubscribe } = pc.iceGatheringStateChange.subscribe((state) => {
      if (state === 'complete') {
        clearTimeout(timer);
        unsubscribe();
        resolve();
      }
    });
  });
}
