/**
 * The media metrics across the thread boundary. On a worker, `createWorkerMetrics` implements
 * the same interfaces the transports count into (sfu/metrics.ts) with plain numbers and bounded
 * lists; `take()` hands over what accumulated since the last call. On the main thread,
 * `applyMetricBatch` replays a batch into the real registry, so `livekit_packet_*` and the other
 * series read exactly as with media on the main thread.
 */
import type { FastHistogram, PacketMetrics, RtcpMetrics, SfuMetrics, StreamMetrics, TransportMetrics } from '../../metrics.ts';
import type { MetricBatch } from './protocol.ts';

/** Bounds per batch: a worker never buffers more than this between two ticks. */
const MAX_STREAM_CALLS = 4096;
const MAX_LATENCY_SAMPLES = 4096;
const MAX_TRANSPORT_CALLS = 1024;

export interface WorkerMetrics {
  rtcp: RtcpMetrics;
  packets: PacketMetrics;
  streams: StreamMetrics;
  forwardLatency: FastHistogram;
  transport: TransportMetrics;
  /** The port gauge's reader (the transport factory registers one). */
  ports(): { inUse: number; capacity: number };
  take(): MetricBatch;
}

export function createWorkerMetrics(): WorkerMetrics {
  let packets = [0, 0, 0, 0];
  let bytes = [0, 0, 0, 0];
  const rtcpCounts = new Map<string, number>();
  let streams: MetricBatch['streams'] = [];
  let latency: number[] = [];
  let transport: MetricBatch['transport'] = [];
  let portReader: (() => { inUse: number; capacity: number }) | undefined;
  const rtcp = (kind: string) => (direction: string, count = 1) => {
    const key = `${kind}:${direction}`;
    rtcpCounts.set(key, (rtcpCounts.get(key) ?? 0) + count);
  };
  const streamCall = (name: string) => (direction: string, kind: string, a: number, b = 0) => {
    if (streams.length < MAX_STREAM_CALLS) streams.push([name, direction, kind, a, b]);
  };
  const transportCall = (name: string, a = '', b = '') => {
    if (transport.length < MAX_TRANSPORT_CALLS) transport.push([name, a, b]);
  };
  return {
    packets: {
      incoming(n, retransmit) {
        const i = retransmit ? 1 : 0;
        packets[i]! += 1;
        bytes[i]! += n;
      },
      outgoing(n, retransmit) {
        const i = retransmit ? 3 : 2;
        packets[i]! += 1;
        bytes[i]! += n;
      },
    },
    rtcp: { nack: rtcp('nack'), pli: rtcp('pli'), fir: rtcp('fir') },
    streams: { packetLoss: streamCall('loss'), jitter: streamCall('jitter'), rtt: streamCall('rtt') },
    forwardLatency: {
      observe(v) {
        if (latency.length < MAX_LATENCY_SAMPLES) latency.push(v);
      },
    },
    transport: {
      datagramDropped: (reason) => transportCall('datagram', reason),
      failed: () => transportCall('failed'),
      portExhausted: () => transportCall('portExhausted'),
      dataDropped: (kind, reason) => transportCall('data', kind, reason),
      ports(read) {
        portReader = read;
        return () => {
          if (portReader === read) portReader = undefined;
        };
      },
    },
    ports: () => portReader?.() ?? { inUse: 0, capacity: 0 },
    take() {
      const batch: MetricBatch = {
        packets,
        bytes,
        rtcp: Array.from(rtcpCounts, ([key, n]) => {
          const [kind, direction] = key.split(':') as [string, string];
          return [kind, direction, n];
        }),
        streams,
        latency,
        transport,
      };
      packets = [0, 0, 0, 0];
      bytes = [0, 0, 0, 0];
      rtcpCounts.clear();
      streams = [];
      latency = [];
      transport = [];
      return batch;
    },
  };
}

type Direction = 'incoming' | 'outgoing';
type Kind = 'audio' | 'video';

/** Replays a worker's batch into the main thread's metrics. Names are checked, not trusted. */
export function applyMetricBatch(m: SfuMetrics, batch: MetricBatch): void {
  m.addPackets(batch.packets, batch.bytes);
  for (const [kind, direction, n] of batch.rtcp) {
    const dir = direction as Direction;
    if (kind === 'nack') m.rtcp.nack(dir, n);
    else if (kind === 'pli') m.rtcp.pli(dir, n);
    else if (kind === 'fir') m.rtcp.fir(dir, n);
  }
  for (const [name, direction, kind, a, b] of batch.streams) {
    const dir = direction as Direction;
    const k = kind as Kind;
    if (name === 'loss') m.streams.packetLoss(dir, k, a, b);
    else if (name === 'jitter') m.streams.jitter(dir, k, a);
    else if (name === 'rtt') m.streams.rtt(dir, k, a);
  }
  for (const v of batch.latency) m.forwardLatency.observe(v);
  for (const [name, a, b] of batch.transport) {
    if (name === 'datagram') m.transport.datagramDropped(a as Parameters<TransportMetrics['datagramDropped']>[0]);
    else if (name === 'failed') m.transport.failed();
    else if (name === 'portExhausted') m.transport.portExhausted();
    else if (name === 'data') m.transport.dataDropped(a as 'reliable' | 'lossy', b as 'not_open' | 'backlog');
  }
}
