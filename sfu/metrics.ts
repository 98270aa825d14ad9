/**
 * The SFU's Prometheus metric set, created on an injected registry by `createSfuMetrics`.
 * Names are LiveKit's where LiveKit has one (livekit/livekit pkg/telemetry/prometheus), the rest
 * carry the `matrixrtc_sfu_` prefix; labels are low-cardinality (direction, kind, transmission,
 * result) and never a room, participant or track id.
 *
 * Hot path (per packet, called by the media layer): `packets.*`, `rtcp.*` and
 * `forwardLatency.observe` only bump plain numbers (~1 ns); the registry reads and folds them into
 * the Prometheus counters/histogram when it is scraped. Periodic per-stream figures (loss,
 * jitter, from RTCP receiver reports) go through `streams.*`, which writes prom-client directly
 * (~250 ns), so call those once per report, not per packet.
 *
 * Rooms, participants and published tracks are counted from the session layer's `SfuEvent`s by
 * `attachSfuEventMetrics`; the session layer must not count them again. Subscribed tracks have
 * no event, so the session layer calls `tracks.subscribed(kind)` / `tracks.unsubscribed(kind)`.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Clock } from '../common/clock.ts';
import type { SfuEvent, SfuEventSource } from './room-service-api.ts';

export type Direction = 'incoming' | 'outgoing';
export type MediaKind = 'audio' | 'video' | 'data';

/** Per-packet counters; every method is a few additions on plain numbers. */
export interface PacketMetrics {
  /** One RTP packet received from a publisher (`retransmit` for RTX / NACK answers). */
  incoming(bytes: number, retransmit?: boolean): void;
  /** One RTP packet sent to a subscriber. */
  outgoing(bytes: number, retransmit?: boolean): void;
}

/** RTCP feedback counts; per RTCP packet, cheap. */
export interface RtcpMetrics {
  /** `direction`: incoming = received from a client, outgoing = sent by the SFU. */
  nack(direction: Direction, count?: number): void;
  pli(direction: Direction, count?: number): void;
  fir(direction: Direction, count?: number): void;
}

/** Per-stream quality, once per receiver report (not per packet). */
export interface StreamMetrics {
  /** `lost` of `total` packets in the report interval (livekit_packet_loss_total / _percent). */
  packetLoss(direction: Direction, kind: MediaKind, lost: number, total: number): void;
  /** Interarrival jitter in microseconds (livekit_jitter_us). */
  jitter(direction: Direction, kind: MediaKind, jitterUs: number): void;
  /** Round-trip time in milliseconds (livekit_rtt_ms). */
  rtt(direction: Direction, kind: MediaKind, rttMs: number): void;
}

/** A histogram whose `observe` is a bucket scan over plain numbers. */
export interface FastHistogram {
  observe(value: number): void;
}

export interface TrackMetrics {
  subscribed(kind: MediaKind): void;
  unsubscribed(kind: MediaKind): void;
}

/** Used by the webhook notifier. */
export interface WebhookMetrics {
  /** A receiver answered 2xx. */
  delivered(event: string): void;
  /** One attempt failed (`reason`: status | network | timeout); it may still be retried. */
  attemptFailed(reason: 'status' | 'network' | 'timeout'): void;
  /** Given up after the last retry. */
  failed(event: string): void;
  /** Not queued because the queue for a URL was full. */
  dropped(): void;
  /** Registers a reader of the current queue length (summed over URLs); returns an unregister. */
  queueLength(read: () => number): () => void;
}

export interface GuardMetrics {
  /** Something refused by a limit; `limit` is the config key (e.g. `signal_limits.max_sdp_bytes`). */
  refused(limit: string): void;
  /** An exception while handling one participant's signalling; that participant was closed. */
  participantFailed(): void;
}

/** The media transports' health: guard drops, failures, UDP ports of rtc.port_range_*. */
export interface TransportMetrics {
  /** A datagram on a media port dropped by the guard (sfu/media/werift-guard.ts). */
  datagramDropped(reason: 'foreign_address' | 'stun_unauthenticated' | 'dtls_unauthenticated'): void;
  /** A participant's transport failed or its DTLS session ended: the session was ended. */
  failed(): void;
  /** A peer connection could not get a UDP port (the range is used up). */
  portExhausted(): void;
  /** A data packet to a subscriber dropped: its channel not open yet, or too much queued in it. */
  dataDropped(kind: 'reliable' | 'lossy', reason: 'not_open' | 'backlog'): void;
  /** Registers readers of the UDP ports in use and the range's size; returns an unregister. */
  ports(read: () => { inUse: number; capacity: number }): () => void;
}

export interface TwirpMetrics {
  request(method: string, code: string): void;
}

export interface SfuMetrics {
  readonly packets: PacketMetrics;
  readonly rtcp: RtcpMetrics;
  readonly streams: StreamMetrics;
  /** Seconds a packet spends inside the SFU, from receipt to send (livekit_forward_latency_seconds). */
  readonly forwardLatency: FastHistogram;
  readonly tracks: TrackMetrics;
  readonly webhook: WebhookMetrics;
  readonly twirp: TwirpMetrics;
  /** Limits and faults of the signalling edge and the session layer. */
  readonly guard: GuardMetrics;
  /** Media bytes received + sent so far (for limit.bytes_per_sec); reads plain numbers. */
  mediaBytes(): number;
  readonly transport: TransportMetrics;
  /** Used by `attachSfuEventMetrics`; exposed for tests and for a session layer without events. */
  readonly sessions: {
    setRooms(n: number): void;
    setParticipants(n: number): void;
    setPublishedTracks(kind: MediaKind, n: number): void;
    roomEnded(durationSeconds: number): void;
  };
  /** RTP packets received + sent so far (the cluster registry reports packets per second). */
  mediaPackets(): number;
  /**
   * Adds packets counted elsewhere (a media worker's batch): four slots each, incoming,
   * incoming retransmit, outgoing, outgoing retransmit.
   */
  addPackets(counts: readonly number[], bytes: readonly number[]): void;
}

const FORWARD_LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1];

/** A Prometheus histogram fed from plain-number buckets, read at scrape time. */
function createFastHistogram(registry: Registry, name: string, help: string, buckets: number[]): FastHistogram {
  const counts = new Float64Array(buckets.length + 1);
  let sum = 0;
  let count = 0;
  const hist: FastHistogram = {
    observe(value) {
      let i = 0;
      while (i < buckets.length && value > buckets[i]!) i++;
      counts[i]! += 1;
      sum += value;
      count += 1;
    },
  };
  // prom-client accepts any object with this shape as a metric; `get` renders the buckets.
  registry.registerMetric({
    name,
    help,
    type: 'histogram',
    aggregator: 'sum',
    get: async () => {
      let cumulative = 0;
      const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
      for (let i = 0; i < buckets.length; i++) {
        cumulative += counts[i]!;
        values.push({ labels: { le: buckets[i]! }, value: cumulative, metricName: `${name}_bucket` });
      }
      values.push({ labels: { le: '+Inf' }, value: count, metricName: `${name}_bucket` });
      values.push({ labels: {}, value: sum, metricName: `${name}_sum` });
      values.push({ labels: {}, value: count, metricName: `${name}_count` });
      return { name, help, type: 'histogram', aggregator: 'sum', values };
    },
    reset() {
      counts.fill(0);
      sum = 0;
      count = 0;
    },
  } as unknown as Parameters<Registry['registerMetric']>[0]);
  return hist;
}

export function createSfuMetrics(registry: Registry): SfuMetrics {
  const registers = [registry];

  // Per-packet figures accumulate here and are folded into the counters on scrape.
  // Index: [incoming initial, incoming retransmit, outgoing initial, outgoing retransmit].
  const pktCount = new Float64Array(4);
  const pktBytes = new Float64Array(4);
  const pktFlushedCount = new Float64Array(4);
  const pktFlushedBytes = new Float64Array(4);
  const slots: [Direction, 'initial' | 'retransmit'][] = [
    ['incoming', 'initial'],
    ['incoming', 'retransmit'],
    ['outgoing', 'initial'],
    ['outgoing', 'retransmit'],
  ];
  const flushPackets = (target: Float64Array, flushed: Float64Array, metric: Counter<'direction' | 'transmission'>) => {
    for (let i = 0; i < 4; i++) {
      const delta = target[i]! - flushed[i]!;
      if (delta > 0) {
        const [direction, transmission] = slots[i]!;
        metric.inc({ direction, transmission }, delta);
        flushed[i] = target[i]!;
      }
    }
  };
  const packetTotal: Counter<'direction' | 'transmission'> = new Counter({
    name: 'livekit_packet_total',
    help: 'RTP packets received from publishers (incoming) and sent to subscribers (outgoing)',
    labelNames: ['direction', 'transmission'],
    registers,
    collect() {
      flushPackets(pktCount, pktFlushedCount, packetTotal);
    },
  });
  const packetBytes: Counter<'direction' | 'transmission'> = new Counter({
    name: 'livekit_packet_bytes',
    help: 'RTP payload bytes received (incoming) and sent (outgoing)',
    labelNames: ['direction', 'transmission'],
    registers,
    collect() {
      flushPackets(pktBytes, pktFlushedBytes, packetBytes);
    },
  });
  for (const [direction, transmission] of slots) {
    packetTotal.inc({ direction, transmission }, 0);
    packetBytes.inc({ direction, transmission }, 0);
  }

  // RTCP feedback: [incoming, outgoing] per kind of feedback.
  const rtcpCounts = { nack: new Float64Array(2), pli: new Float64Array(2), fir: new Float64Array(2) };
  const rtcpFlushed = { nack: new Float64Array(2), pli: new Float64Array(2), fir: new Float64Array(2) };
  const rtcpCounter = (kind: 'nack' | 'pli' | 'fir', help: string): Counter<'direction'> => {
    const c: Counter<'direction'> = new Counter({
      name: `livekit_${kind}_total`,
      help,
      labelNames: ['direction'],
      registers,
      collect() {
        const now = rtcpCounts[kind];
        const done = rtcpFlushed[kind];
        for (let i = 0; i < 2; i++) {
          const delta = now[i]! - done[i]!;
          if (delta > 0) {
            c.inc({ direction: i === 0 ? 'incoming' : 'outgoing' }, delta);
            done[i] = now[i]!;
          }
        }
      },
    });
    c.inc({ direction: 'incoming' }, 0);
    c.inc({ direction: 'outgoing' }, 0);
    return c;
  };
  rtcpCounter('nack', 'RTCP NACK requests (incoming: from subscribers; outgoing: sent to publishers)');
  rtcpCounter('pli', 'RTCP picture loss indications (incoming: from subscribers; outgoing: sent to publishers)');
  rtcpCounter('fir', 'RTCP full intra requests (incoming: from subscribers; outgoing: sent to publishers)');

  const lossTotal = new Counter({
    name: 'livekit_packet_loss_total',
    help: 'RTP packets reported lost, from receiver reports',
    labelNames: ['direction', 'kind'],
    registers,
  });
  const lossPercent = new Histogram({
    name: 'livekit_packet_loss_percent',
    help: 'Packet loss per receiver report interval, percent',
    labelNames: ['direction', 'kind'],
    buckets: [0, 0.1, 0.3, 0.5, 0.7, 1, 5, 10, 40, 100],
    registers,
  });
  const jitterUs = new Histogram({
    name: 'livekit_jitter_us',
    help: 'RTP interarrival jitter, microseconds',
    labelNames: ['direction', 'kind'],
    buckets: [1000, 10000, 30000, 50000, 70000, 100000, 300000, 600000, 1000000],
    registers,
  });
  const rttMs = new Histogram({
    name: 'livekit_rtt_ms',
    help: 'Round-trip time from RTCP, milliseconds',
    labelNames: ['direction', 'kind'],
    buckets: [50, 100, 150, 200, 250, 500, 750, 1000, 5000, 10000],
    registers,
  });

  const forwardLatency = createFastHistogram(
    registry,
    'livekit_forward_latency_seconds',
    'Time an RTP packet spends inside the SFU, from receipt to send, seconds',
    FORWARD_LATENCY_BUCKETS,
  );

  const rooms = new Gauge({ name: 'livekit_room_total', help: 'Rooms open on this node', registers });
  const roomDuration = new Histogram({
    name: 'livekit_room_duration_seconds',
    help: 'How long rooms stayed open, seconds',
    buckets: [5, 10, 60, 300, 600, 1800, 3600, 7200, 18000, 36000],
    registers,
  });
  const participants = new Gauge({
    name: 'livekit_participant_total',
    help: 'Active participants on this node',
    registers,
  });
  const published = new Gauge({
    name: 'livekit_track_published_total',
    help: 'Tracks published on this node',
    labelNames: ['kind'],
    registers,
  });
  const subscribed = new Gauge({
    name: 'livekit_track_subscribed_total',
    help: 'Track subscriptions on this node',
    labelNames: ['kind'],
    registers,
  });
  for (const kind of ['audio', 'video'] as const) {
    published.set({ kind }, 0);
    subscribed.set({ kind }, 0);
  }

  const webhookDeliveries = new Counter({
    name: 'matrixrtc_sfu_webhook_deliveries_total',
    help: 'Webhook events a receiver accepted (2xx)',
    labelNames: ['event'],
    registers,
  });
  const webhookAttemptFailures = new Counter({
    name: 'matrixrtc_sfu_webhook_attempt_failures_total',
    help: 'Webhook POST attempts that failed (non-2xx status, network error or timeout); may be retried',
    labelNames: ['reason'],
    registers,
  });
  const webhookFailures = new Counter({
    name: 'matrixrtc_sfu_webhook_failures_total',
    help: 'Webhook events given up after the last retry',
    labelNames: ['event'],
    registers,
  });
  const webhookDropped = new Counter({
    name: 'matrixrtc_sfu_webhook_dropped_total',
    help: 'Webhook events not queued because the queue for a URL was full',
    registers,
  });
  const queueReaders = new Set<() => number>();
  const webhookQueue: Gauge = new Gauge({
    name: 'matrixrtc_sfu_webhook_queue_length',
    help: 'Webhook events waiting for delivery',
    registers,
    collect() {
      let n = 0;
      for (const read of queueReaders) n += read();
      webhookQueue.set(n);
    },
  });

  const droppedDatagrams = new Counter({
    name: 'matrixrtc_sfu_media_datagrams_dropped_total',
    help: 'Datagrams on media ports dropped before DTLS/SRTP: from an address that is not the selected ICE pair, STUN requests failing MESSAGE-INTEGRITY, unauthenticated DTLS records after the handshake',
    labelNames: ['reason'],
    registers,
  });
  const transportFailures = new Counter({
    name: 'matrixrtc_sfu_transport_failures_total',
    help: 'Participant sessions ended because a peer connection failed or its DTLS session ended (client told to reconnect)',
    registers,
  });
  const portExhausted = new Counter({
    name: 'matrixrtc_sfu_udp_port_exhausted_total',
    help: 'Peer connections refused because every UDP port of rtc.port_range_start..end was in use',
    registers,
  });
  const dataDropped = new Counter({
    name: 'matrixrtc_sfu_data_packets_dropped_total',
    help: 'Data packets not sent to a subscriber: its data channel had not opened (reliable backlog full) or it was not reading (backlog)',
    labelNames: ['kind', 'reason'],
    registers,
  });
  const portReaders = new Set<() => { inUse: number; capacity: number }>();
  const sumPorts = (key: 'inUse' | 'capacity') => {
    let n = 0;
    for (const read of portReaders) n += read()[key];
    return n;
  };
  const portGauges: Gauge[] = [
    new Gauge({
      name: 'matrixrtc_sfu_udp_ports_in_use',
      help: 'UDP ports of rtc.port_range_start..end held by peer connections',
      registers,
      collect() {
        this.set(sumPorts('inUse'));
      },
    }),
    new Gauge({
      name: 'matrixrtc_sfu_udp_ports_capacity',
      help: 'UDP ports in rtc.port_range_start..end (one per peer connection; up to two per participant)',
      registers,
      collect() {
        this.set(sumPorts('capacity'));
      },
    }),
  ];
  void portGauges;

  const twirpRequests = new Counter({
    name: 'livekit_twirp_request_status',
    help: 'RoomService requests by method and Twirp outcome (ok or the error code)',
    labelNames: ['method', 'code'],
    registers,
  });

  const limitRefusals = new Counter({
    name: 'matrixrtc_sfu_limit_refusals_total',
    help: 'Requests, messages and joins refused by a configured limit, by config key',
    labelNames: ['limit'],
    registers,
  });
  const participantFailures = new Counter({
    name: 'matrixrtc_sfu_participant_failures_total',
    help: "Exceptions in one participant's signalling handling (the participant was closed, the process kept running)",
    registers,
  });

  return {
    guard: {
      refused: (limit) => limitRefusals.inc({ limit }),
      participantFailed: () => participantFailures.inc(),
    },
    mediaBytes: () => pktBytes[0]! + pktBytes[1]! + pktBytes[2]! + pktBytes[3]!,
    mediaPackets: () => pktCount[0]! + pktCount[1]! + pktCount[2]! + pktCount[3]!,
    addPackets(counts, bytes) {
      for (let i = 0; i < 4; i++) {
        pktCount[i]! += counts[i] ?? 0;
        pktBytes[i]! += bytes[i] ?? 0;
      }
    },
    packets: {
      incoming(bytes, retransmit) {
        const i = retransmit ? 1 : 0;
        pktCount[i]! += 1;
        pktBytes[i]! += bytes;
      },
      outgoing(bytes, retransmit) {
        const i = retransmit ? 3 : 2;
        pktCount[i]! += 1;
        pktBytes[i]! += bytes;
      },
    },
    rtcp: {
      nack(direction, count = 1) {
        rtcpCounts.nack[direction === 'incoming' ? 0 : 1]! += count;
      },
      pli(direction, count = 1) {
        rtcpCounts.pli[direction === 'incoming' ? 0 : 1]! += count;
      },
      fir(direction, count = 1) {
        rtcpCounts.fir[direction === 'incoming' ? 0 : 1]! += count;
      },
    },
    streams: {
      packetLoss(direction, kind, lost, total) {
        if (total > 0) lossPercent.observe({ direction, kind }, (lost / total) * 100);
        if (lost > 0) lossTotal.inc({ direction, kind }, lost);
      },
      jitter(direction, kind, us) {
        if (us > 0) jitterUs.observe({ direction, kind }, us);
      },
      rtt(direction, kind, ms) {
        if (ms > 0) rttMs.observe({ direction, kind }, ms);
      },
    },
    forwardLatency,
    tracks: {
      subscribed: (kind) => subscribed.inc({ kind }),
      unsubscribed: (kind) => subscribed.dec({ kind }),
    },
    webhook: {
      delivered: (event) => webhookDeliveries.inc({ event }),
      attemptFailed: (reason) => webhookAttemptFailures.inc({ reason }),
      failed: (event) => webhookFailures.inc({ event }),
      dropped: () => webhookDropped.inc(),
      queueLength(read) {
        queueReaders.add(read);
        return () => queueReaders.delete(read);
      },
    },
    twirp: {
      request: (method, code) => twirpRequests.inc({ method, code }),
    },
    transport: {
      datagramDropped: (reason) => droppedDatagrams.inc({ reason }),
      failed: () => transportFailures.inc(),
      portExhausted: () => portExhausted.inc(),
      dataDropped: (kind, reason) => dataDropped.inc({ kind, reason }),
      ports(read) {
        portReaders.add(read);
        return () => portReaders.delete(read);
      },
    },
    sessions: {
      setRooms: (n) => rooms.set(n),
      setParticipants: (n) => participants.set(n),
      setPublishedTracks: (kind, n) => published.set({ kind }, n),
      roomEnded: (s) => roomDuration.observe(s),
    },
  };
}

const roomKey = (e: { room: { sid: string; name: string } }) => e.room.sid || e.room.name;

function trackKind(type: number): MediaKind {
  // livekit.TrackType: AUDIO = 0, VIDEO = 1, DATA = 2
  return type === 1 ? 'video' : type === 2 ? 'data' : 'audio';
}

/**
 * Keeps the room, participant and published-track gauges from the session layer's events.
 * It tracks live sids (not counts), so a repeated or out-of-order event cannot drive a gauge
 * negative, and a room's participants and tracks are forgotten when the room finishes.
 * Returns the unsubscribe.
 */
export function attachSfuEventMetrics(source: SfuEventSource, metrics: SfuMetrics, clock: Clock): () => void {
  const rooms = new Map<string, { startedMs: number; participants: Set<string> }>();
  const tracks = new Map<string, { room: string; participant: string; kind: MediaKind }>();

  const publish = () => {
    let participants = 0;
    for (const r of rooms.values()) participants += r.participants.size;
    const byKind = { audio: 0, video: 0, data: 0 };
    for (const t of tracks.values()) byKind[t.kind]++;
    metrics.sessions.setRooms(rooms.size);
    metrics.sessions.setParticipants(participants);
    metrics.sessions.setPublishedTracks('audio', byKind.audio);
    metrics.sessions.setPublishedTracks('video', byKind.video);
  };
  const ensureRoom = (e: SfuEvent) => {
    const key = roomKey(e);
    let r = rooms.get(key);
    if (!r) {
      const created = Number(e.room.creationTimeMs) || Number(e.room.creationTime) * 1000 || clock.now();
      r = { startedMs: created, participants: new Set() };
      rooms.set(key, r);
    }
    return r;
  };
  const dropTracksOf = (room: string, participant?: string) => {
    for (const [sid, t] of tracks) {
      if (t.room === room && (participant === undefined || t.participant === participant)) tracks.delete(sid);
    }
  };

  const onEvent = (e: SfuEvent) => {
    const key = roomKey(e);
    switch (e.type) {
      case 'room_started':
        ensureRoom(e);
        break;
      case 'room_finished': {
        const r = rooms.get(key);
        if (r) {
          metrics.sessions.roomEnded(Math.max(0, (clock.now() - r.startedMs) / 1000));
          rooms.delete(key);
          dropTracksOf(key);
        }
        break;
      }
      case 'participant_joined':
        ensureRoom(e).participants.add(e.participant.sid || e.participant.identity);
        break;
      case 'participant_left':
      case 'participant_connection_aborted': {
        const pid = e.participant.sid || e.participant.identity;
        rooms.get(key)?.participants.delete(pid);
        dropTracksOf(key, pid);
        break;
      }
      case 'track_published':
        ensureRoom(e);
        tracks.set(e.track.sid, {
          room: key,
          participant: e.participant.sid || e.participant.identity,
          kind: trackKind(e.track.type),
        });
        break;
      case 'track_unpublished':
        tracks.delete(e.track.sid);
        break;
    }
    publish();
  };
  return source.onEvent(onEvent);
}
