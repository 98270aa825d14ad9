/**
 * Connection quality with real libwebrtc clients (@livekit/rtc-node) on our SFU: two
 * participants publish a tone to each other. On clean loopback both hear EXCELLENT for
 * themselves and each other (ConnectionQualityUpdate → rtc-node's connectionQualityChanged),
 * and /metrics has RTT and jitter from receiver reports, uplink jitter and forward latency
 * observations. When the SFU's send-path test hook drops every 4th packet on the way to bob,
 * bob's receiver reports show the loss and his own quality falls below EXCELLENT.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ConnectionQuality, type Participant } from '@livekit/rtc-node';
import { rtcNodeScene, type RtcNodeClient } from '../support/rtc-node.ts';
import { waitFor } from '../support/wait.ts';

/** Latest quality each client heard, by the identity it is about. */
function recordQualities(client: RtcNodeClient): Map<string, ConnectionQuality> {
  const seen = new Map<string, ConnectionQuality>();
  client.room.on('connectionQualityChanged', (quality: ConnectionQuality, participant: Participant) => {
    seen.set(participant.identity, quality);
  });
  return seen;
}

/** Sum of the `_count` samples of a histogram in Prometheus text, optionally one label set. */
function histogramCount(text: string, name: string, label?: string): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}_count`)) continue;
    if (label && !line.includes(label)) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

describe('sfu connection quality with rtc-node', () => {
  const scene = rtcNodeScene();
  afterEach(() => scene.end());

  it('reports EXCELLENT for both participants on a clean link, with RTT, jitter and latency metrics', async () => {
    const sfu = await scene.start();
    const alice = await scene.connect('alice');
    const bob = await scene.connect('bob');
    const aliceSees = recordQualities(alice);
    const bobSees = recordQualities(bob);

    const bobGetsAlice = bob.waitForEvent('trackSubscribed', (_t, _p, p) => p.identity === 'alice', 15_000);
    const aliceGetsBob = alice.waitForEvent('trackSubscribed', (_t, _p, p) => p.identity === 'bob', 15_000);
    scene.onEnd((await alice.publishTone(440)).stop);
    scene.onEnd((await bob.publishTone(660)).stop);
    await Promise.all([bobGetsAlice, aliceGetsBob]);

    // Each participant gets its own quality and that of the participant it subscribes to.
    const both = (seen: Map<string, ConnectionQuality>) =>
      seen.get('alice') === ConnectionQuality.QUALITY_EXCELLENT && seen.get('bob') === ConnectionQuality.QUALITY_EXCELLENT;
    await waitFor('alice hears EXCELLENT for alice and bob', () => both(aliceSees), { timeoutMs: 20_000, intervalMs: 100 });
    await waitFor('bob hears EXCELLENT for alice and bob', () => both(bobSees), { timeoutMs: 20_000, intervalMs: 100 });

    const metrics = await waitFor(
      'RTT, jitter and forward latency observations in /metrics',
      async () => {
        const text = await (await fetch(`${sfu.url}/metrics`)).text();
        const ok =
          histogramCount(text, 'livekit_rtt_ms', 'direction="outgoing"') > 0 &&
          histogramCount(text, 'livekit_jitter_us', 'direction="outgoing"') > 0 &&
          histogramCount(text, 'livekit_jitter_us', 'direction="incoming"') > 0 &&
          histogramCount(text, 'livekit_packet_loss_percent', 'direction="incoming"') > 0 &&
          histogramCount(text, 'livekit_forward_latency_seconds') > 0;
        return ok ? text : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 250 },
    );
    // Loopback: the forward latency is well under the top bucket for (nearly) every packet.
    const count = histogramCount(metrics, 'livekit_forward_latency_seconds');
    const under = /livekit_forward_latency_seconds_bucket\{le="0.1"\} (\d+)/.exec(metrics);
    expect(Number(under?.[1])).toBeGreaterThan(count * 0.9);
  });

  it("lowers a subscriber's own quality when a quarter of its packets are dropped", async () => {
    let bobSid = '';
    let seen = 0;
    await scene.start({
      dropOutgoing: ({ subscriber }) => subscriber === bobSid && ++seen % 4 === 0,
    });
    const alice = await scene.connect('alice');
    const bob = await scene.connect('bob');
    bobSid = bob.room.localParticipant!.sid!;
    const bobSees = recordQualities(bob);
    const aliceSees = recordQualities(alice);

    const bobGetsAlice = bob.waitForEvent('trackSubscribed', (_t, _p, p) => p.identity === 'alice', 15_000);
    scene.onEnd((await alice.publishTone(440)).stop);
    await bobGetsAlice;

    const worse = await waitFor(
      'bob hears his own quality drop below EXCELLENT',
      () => {
        const q = bobSees.get('bob');
        return q !== undefined && q !== ConnectionQuality.QUALITY_EXCELLENT ? q : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    );
    // Opus loses 25 %: loss effect 25 × 8 puts the score at the floor, which is POOR.
    expect([ConnectionQuality.QUALITY_POOR, ConnectionQuality.QUALITY_GOOD]).toContain(worse);
    // The publisher's uplink is clean: bob hears alice as EXCELLENT, and alice herself too.
    expect(bobSees.get('alice')).toBe(ConnectionQuality.QUALITY_EXCELLENT);
    await waitFor('alice hears EXCELLENT for herself', () => aliceSees.get('alice') === ConnectionQuality.QUALITY_EXCELLENT, {
      timeoutMs: 20_000,
      intervalMs: 100,
    });
  });
});
