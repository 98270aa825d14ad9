/**
 * The messages between the SFU's main thread and its media workers (docs/media-workers.md).
 * Control goes over the worker's own port (structured clone, signalling rates); packets go
 * over the relay rings, never over these messages. Ids: a transport id (`tid`), a downtrack id
 * (`did`) and a relay id are the main thread's, unique in the process; an upstream id (`uid`)
 * is the worker's own.
 */
import type { MessagePort as WorkerPort } from 'node:worker_threads';
import type { DtlsKeys } from '../peer-config.ts';
import type { DataChannelKind, DownlinkStats, DownTrackStats, IceCandidateInit, SignalTarget, UplinkStats } from '../../rtc/types.ts';

/** What a worker is started with (workerData). */
export interface WorkerInit {
  index: number;
  /** This worker's slice of `rtc.port_range_*`. */
  portRange: [number, number];
  nodeIp: string;
  logLevel: string;
  /** Time a sample of packets through the SFU (livekit_forward_latency_seconds). */
  timed: boolean;
  /** The process's DTLS certificate: a worker never generates one (peer-config.ts, dtlsKeysOfProcess). */
  dtls: DtlsKeys;
  /** Test hooks: a module (URL) whose default export, called with `data`, returns werift hooks. */
  hooks?: { module: string; data?: unknown };
}

/** One relay ring pair between this worker and a peer: `out` we write, `in` we read. */
export interface PeerRings {
  peer: number;
  out: SharedArrayBuffer;
  in: SharedArrayBuffer;
  /** The pair's doorbell: our end. We post on it to wake the peer, and it posts to wake us. */
  port: WorkerPort;
}

export type ToWorker =
  | { t: 'ping'; n: number }
  | { t: 'peer'; rings: PeerRings }
  | { t: 'peerGone'; peer: number }
  | { t: 'create'; tid: number; sid: string }
  | { t: 'start'; tid: number }
  | { t: 'offer' | 'answer'; tid: number; req: number; sdp: string; id: number }
  | { t: 'candidate'; tid: number; req: number; target: SignalTarget; init: IceCandidateInit }
  | { t: 'subscribe'; tid: number; did: number; uid?: number; relay?: number; streamId: string; trackId: string }
  | { t: 'down'; did: number; op: 'enabled' | 'quality' | 'close'; value?: boolean | number }
  | { t: 'data'; tid: number; kind: DataChannelKind; bytes: Uint8Array }
  | { t: 'close'; tid: number }
  | { t: 'upstream'; uid: number; op: 'keyframe' | 'close'; rid?: string }
  /** Start copying upstream `uid`'s packets into the ring to worker `to`, tagged `relay`. */
  | { t: 'relayOut'; uid: number; relay: number; to: number }
  | { t: 'relayOutEnd'; relay: number }
  /** Make the copy of a track published on worker `from` that relay `relay` fills. */
  | { t: 'relayIn'; relay: number; from: number; kind: 'audio' | 'video'; mimeType: string; clockRate: number; ext: Record<number, string> }
  | { t: 'relayInEnd'; relay: number }
  /** Test hook: the worker throws from its event loop (an uncaught error). */
  | { t: 'crash' };

/** Counters a worker accumulates between two `tick`s (see metrics-bridge.ts). */
export interface MetricBatch {
  /** Packets and bytes: incoming, incoming retransmit, outgoing, outgoing retransmit. */
  packets: number[];
  bytes: number[];
  /** [kind, direction, count] of NACK/PLI/FIR. */
  rtcp: [string, string, number][];
  /** streams.packetLoss / jitter / rtt calls, in order (bounded). */
  streams: [string, string, string, number, number][];
  latency: number[];
  transport: [string, string, string][];
}

export interface WorkerTick {
  t: 'tick';
  /** Audio level accumulation per upstream since the last tick: [uid, packets, active, sum]. */
  audio: [number, number, number, number][];
  metrics: MetricBatch;
  /** Whether a new participant could get UDP ports on this worker now. */
  admit: boolean;
  /** Every STATS_EVERY ticks: cumulative figures. */
  stats?: {
    ups: [number, UplinkStats][];
    downs: [number, DownTrackStats, DownlinkStats][];
    ports: { inUse: number; capacity: number };
    /** process.threadCpuUsage(), microseconds. */
    cpu: { user: number; system: number };
    participants: number;
    /** `unknown`: records read for a relay or layer not (yet, or no longer) known here. */
    relay: { written: number; read: number; drops: number; unknown: number };
  };
}

export type FromWorker =
  | { t: 'ready' }
  | { t: 'pong'; n: number }
  | { t: 'signal'; tid: number; bytes: Uint8Array }
  | { t: 'connected'; tid: number }
  | { t: 'failed'; tid: number; reason: string }
  | {
      t: 'media';
      tid: number;
      uid: number;
      mid: string;
      kind: 'audio' | 'video';
      msidTrackId: string;
      mimeType: string;
      clockRate: number;
      ext: Record<number, string>;
    }
  | { t: 'mediaEnded'; tid: number; mid: string }
  | { t: 'data'; tid: number; kind: DataChannelKind; bytes: Uint8Array }
  | { t: 'done'; req: number }
  /** A copy's subscribers want a keyframe of layer `rid` from the publisher's worker. */
  | { t: 'keyframe'; relay: number; rid: string }
  | WorkerTick;

/** Doorbell port messages between two workers. */
export type PeerMessage = { t: 'bell' } | { t: 'rid'; relay: number; index: number; rid: string };

/** Ticks per second (audio levels, metrics) and how many ticks between stats snapshots. */
export const TICK_MS = 100;
export const STATS_EVERY = 10;
/** Bytes of one relay ring (one per ordered worker pair). */
export const RING_BYTES = 2 << 20;
