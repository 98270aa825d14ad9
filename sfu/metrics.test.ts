/**
 * The SFU metric set: LiveKit's names, hot-path counters folded in at scrape time, the
 * forwarding-latency histogram in Prometheus text format, and room/participant/track gauges
 * driven by session events without ever carrying a room or user id.
 */
import { ParticipantInfo, Room, TrackInfo, TrackType } from '@livekit/protocol';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createManualClock } from '../common/clock.ts';
import { attachSfuEventMetrics, createSfuMetrics } from './metrics.ts';
import type { SfuEvent } from './room-service-api.ts';

function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

function eventSource() {
  const listeners = new Set<(e: SfuEvent) => void>();
  return {
    onEvent(l: (e: SfuEvent) => void) {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    emit(e: SfuEvent) {
      for (const l of listeners) l(e);
    },
    get size() {
      return listeners.size;
    },
  };
}

describe('SFU metrics', () => {
  it('folds per-packet counts into livekit_packet_total/_bytes and RTCP counters on scrape', async () => {
    const registry = new Registry();
    const m = createSfuMetrics(registry);
    m.packets.incoming(1000);
    m.packets.incoming(200, true);
    m.packets.outgoing(1000);
    m.packets.outgoing(1000);
    m.rtcp.nack('incoming', 3);
    m.rtcp.pli('outgoing');
    let text = await registry.metrics();
    expect(value(text, 'livekit_packet_total{direction="incoming",transmission="initial"}')).toBe(1);
    expect(value(text, 'livekit_packet_total{direction="incoming",transmission="retransmit"}')).toBe(1);
    expect(value(text, 'livekit_packet_total{direction="outgoing",transmission="initial"}')).toBe(2);
    expect(value(text, 'livekit_packet_bytes{direction="outgoing",transmission="initial"}')).toBe(2000);
    expect(value(text, 'livekit_nack_total{direction="incoming"}')).toBe(3);
    expect(value(text, 'livekit_pli_total{direction="outgoing"}')).toBe(1);
    expect(value(text, 'livekit_fir_total{direction="incoming"}')).toBe(0);
    // A second scrape adds only what happened since.
    m.packets.outgoing(500);
    text = await registry.metrics();
    expect(value(text, 'livekit_packet_total{direction="outgoing",transmission="initial"}')).toBe(3);
    expect(value(text, 'livekit_packet_bytes{direction="outgoing",transmission="initial"}')).toBe(2500);
  });

  it('renders the forwarding-latency histogram with cumulative buckets, sum and count', async () => {
    const registry = new Registry();
    const m = createSfuMetrics(registry);
    m.forwardLatency.observe(0.00005);
    m.forwardLatency.observe(0.0003);
    m.forwardLatency.observe(2);
    const text = await registry.metrics();
    expect(text).toContain('# TYPE livekit_forward_latency_seconds histogram');
    expect(value(text, 'livekit_forward_latency_seconds_bucket{le="0.0001"}')).toBe(1);
    expect(value(text, 'livekit_forward_latency_seconds_bucket{le="0.0005"}')).toBe(2);
    expect(value(text, 'livekit_forward_latency_seconds_bucket{le="0.1"}')).toBe(2);
    expect(value(text, 'livekit_forward_latency_seconds_bucket{le="+Inf"}')).toBe(3);
    expect(value(text, 'livekit_forward_latency_seconds_count')).toBe(3);
    expect(value(text, 'livekit_forward_latency_seconds_sum')).toBeCloseTo(2.00035, 6);
  });

  it('records loss and jitter per receiver report under direction and kind', async () => {
    const registry = new Registry();
    const m = createSfuMetrics(registry);
    m.streams.packetLoss('incoming', 'video', 5, 100);
    m.streams.jitter('incoming', 'audio', 20_000);
    const text = await registry.metrics();
    expect(value(text, 'livekit_packet_loss_total{direction="incoming",kind="video"}')).toBe(5);
    expect(value(text, 'livekit_packet_loss_percent_bucket{le="5",direction="incoming",kind="video"}')).toBe(1);
    expect(value(text, 'livekit_jitter_us_count{direction="incoming",kind="audio"}')).toBe(1);
  });

  it('keeps room, participant and track gauges from session events, tolerating repeats', async () => {
    const registry = new Registry();
    const m = createSfuMetrics(registry);
    const clock = createManualClock();
    const source = eventSource();
    const off = attachSfuEventMetrics(source, m, clock);
    const room = new Room({ sid: 'RM_secret', name: '!secretroom:example.org', creationTimeMs: BigInt(clock.now()) });
    const alice = new ParticipantInfo({ sid: 'PA_a', identity: '@alice:example.org' });
    const bob = new ParticipantInfo({ sid: 'PA_b', identity: '@bob:example.org' });
    const cam = new TrackInfo({ sid: 'TR_cam', type: TrackType.VIDEO });
    const mic = new TrackInfo({ sid: 'TR_mic', type: TrackType.AUDIO });
    source.emit({ type: 'room_started', room });
    source.emit({ type: 'participant_joined', room, participant: alice });
    source.emit({ type: 'participant_joined', room, participant: alice });
    source.emit({ type: 'participant_joined', room, participant: bob });
    source.emit({ type: 'track_published', room, participant: alice, track: cam });
    source.emit({ type: 'track_published', room, participant: bob, track: mic });
    m.tracks.subscribed('video');
    let text = await registry.metrics();
    expect(value(text, 'livekit_room_total')).toBe(1);
    expect(value(text, 'livekit_participant_total')).toBe(2);
    expect(value(text, 'livekit_track_published_total{kind="video"}')).toBe(1);
    expect(value(text, 'livekit_track_published_total{kind="audio"}')).toBe(1);
    expect(value(text, 'livekit_track_subscribed_total{kind="video"}')).toBe(1);

    source.emit({ type: 'participant_left', room, participant: alice });
    source.emit({ type: 'participant_left', room, participant: alice });
    text = await registry.metrics();
    expect(value(text, 'livekit_participant_total')).toBe(1);
    expect(value(text, 'livekit_track_published_total{kind="video"}')).toBe(0);

    clock.advance(90_000);
    source.emit({ type: 'room_finished', room });
    source.emit({ type: 'room_finished', room });
    text = await registry.metrics();
    expect(value(text, 'livekit_room_total')).toBe(0);
    expect(value(text, 'livekit_participant_total')).toBe(0);
    expect(value(text, 'livekit_track_published_total{kind="audio"}')).toBe(0);
    expect(value(text, 'livekit_room_duration_seconds_sum')).toBe(90);
    for (const id of ['secret', 'alice', 'bob', 'TR_']) expect(text).not.toContain(id);
    off();
    expect(source.size).toBe(0);
  });
});
