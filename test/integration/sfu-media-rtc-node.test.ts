/**
 * Media through the SFU between two @livekit/rtc-node participants: a 440 Hz tone published by
 * one is received by the other and its frequency found in the decoded samples, and the SFU's
 * /metrics counts the packets it received and forwarded.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { RemoteTrack } from '@livekit/rtc-node';
import {
  dominantFrequency,
  rms,
  zeroCrossingFrequency,
  SAMPLE_RATE,
  rtcNodeScene,
} from '../support/rtc-node.ts';

describe('sfu media with rtc-node', () => {
  const scene = rtcNodeScene();
  afterEach(() => scene.end());

  it('forwards a 440 Hz tone that the subscriber decodes at 440 Hz', async () => {
    const sfu = await scene.start();
    const alice = await scene.connect('alice');
    const bob = await scene.connect('bob');

    const subscribed = bob.waitForEvent('trackSubscribed', (_t, _pub, p) => p.identity === 'alice', 15_000);
    await alice.publishTone(440);
    const [track] = await subscribed;

    // Skip the first half second (jitter buffer warm-up), then analyse one second.
    const samples = await bob.collectAudio(track as RemoteTrack, SAMPLE_RATE * 1.5);
    const steady = samples.subarray(SAMPLE_RATE / 2);
    expect(rms(steady)).toBeGreaterThan(1000);
    expect(dominantFrequency(steady, 100, 2000)).toBeGreaterThanOrEqual(435);
    expect(dominantFrequency(steady, 100, 2000)).toBeLessThanOrEqual(445);
    expect(Math.abs(zeroCrossingFrequency(steady) - 440)).toBeLessThan(15);

    // 1.5 s of 20 ms Opus frames went in and out: the media layer counted them on /metrics.
    const text = await (await fetch(`${sfu.url}/metrics`)).text();
    const count = (direction: string) =>
      Number(new RegExp(`^livekit_packet_total\\{direction="${direction}",transmission="initial"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
    expect(count('incoming')).toBeGreaterThan(50);
    expect(count('outgoing')).toBeGreaterThan(50);
  });
});
