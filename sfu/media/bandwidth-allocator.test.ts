import { describe, expect, it } from 'vitest';
import { createManualClock } from '../../common/clock.ts';
import { BandwidthAllocator, type AllocatorTrack } from './bandwidth-allocator.ts';

const SIMULCAST = [
  { rank: 1, bitrate: 150_000 },
  { rank: 2, bitrate: 500_000 },
  { rank: 3, bitrate: 1_500_000 },
];

function track(id: string, requestedRank = Number.POSITIVE_INFINITY, layers = SIMULCAST): AllocatorTrack {
  return { id, requestedRank, layers };
}

describe('bandwidth allocator', () => {
  it('caps nothing while no estimate is known or once it is stale', () => {
    const clock = createManualClock();
    const alloc = new BandwidthAllocator({ staleMs: 10_000 });
    expect(alloc.allocate([track('a')], 0, clock.now()).get('a')).toBe(Number.POSITIVE_INFINITY);
    alloc.setEstimate(0, clock.now()); // "no estimate yet"
    expect(alloc.estimateBps(clock.now())).toBeUndefined();
    alloc.setEstimate(200_000, clock.now());
    expect(alloc.allocate([track('a')], 0, clock.now()).get('a')).toBe(1);
    clock.advance(10_001);
    expect(alloc.estimateBps(clock.now())).toBeUndefined();
    expect(alloc.allocate([track('a')], 0, clock.now()).get('a')).toBe(Number.POSITIVE_INFINITY);
  });

  it('gives the highest layer that fits, never above the request, and the lowest when nothing fits', () => {
    const now = createManualClock().now();
    const cases: [estimate: number, requested: number, expected: number][] = [
      [5_000_000, Number.POSITIVE_INFINITY, 3],
      [5_000_000, 2, 2],
      [1_000_000, Number.POSITIVE_INFINITY, 2],
      [600_000, 3, 2],
      [400_000, 3, 1],
      [50_000, 3, 1],
      [5_000_000, 0, 1], // below every layer: the lowest one
    ];
    for (const [estimate, requested, expected] of cases) {
      const alloc = new BandwidthAllocator();
      alloc.setEstimate(estimate, now);
      expect(alloc.allocate([track('a', requested)], 0, now).get('a'), `${estimate} bps, rank ${requested}`).toBe(expected);
    }
  });

  it('spends reserved (audio) bandwidth first and serves the largest request first', () => {
    const now = createManualClock().now();
    const alloc = new BandwidthAllocator();
    alloc.setEstimate(2_100_000, now);
    // 2.1 M - 100 k audio: the HIGH request gets f (1.5 M); what is left (just under 500 k) is q for the other.
    const caps = alloc.allocate([track('small', 2), track('big', 3)], 100_001, now);
    expect(caps.get('big')).toBe(3);
    expect(caps.get('small')).toBe(1);
  });

  it('a non-simulcast track is never capped but its bitrate counts', () => {
    const now = createManualClock().now();
    const alloc = new BandwidthAllocator();
    alloc.setEstimate(1_000_000, now);
    const caps = alloc.allocate([track('plain', 3, [{ rank: 0, bitrate: 600_000 }]), track('sim', 2)], 0, now);
    expect(caps.get('plain')).toBe(Number.POSITIVE_INFINITY);
    expect(caps.get('sim')).toBe(1);
  });

  it('an unmeasured layer fits only when the one below it does', () => {
    const now = createManualClock().now();
    const alloc = new BandwidthAllocator();
    alloc.setEstimate(300_000, now);
    const layers = [
      { rank: 1, bitrate: 150_000 },
      { rank: 2, bitrate: 500_000 },
      { rank: 3, bitrate: 0 },
    ];
    expect(alloc.allocate([track('a', 3, layers)], 0, now).get('a')).toBe(1);
  });

  it('goes down at once, goes up only with headroom and not within the hold time after a step down', () => {
    const clock = createManualClock();
    // No probing here (see the next test): only the estimate moves the layer.
    const alloc = new BandwidthAllocator({ upHeadroom: 1.2, upHoldMs: 4000, appLimitedFactor: Number.POSITIVE_INFINITY });
    const a = [track('a', 3)];
    alloc.setEstimate(2_000_000, clock.now());
    expect(alloc.allocate(a, 0, clock.now()).get('a')).toBe(3);
    alloc.setEstimate(1_000_000, clock.now());
    expect(alloc.allocate(a, 0, clock.now()).get('a')).toBe(2);
    // Enough for f again, but within the hold time: stays.
    clock.advance(1000);
    alloc.setEstimate(2_000_000, clock.now());
    expect(alloc.allocate(a, 0, clock.now()).get('a')).toBe(2);
    // After the hold, f needs 1.5 M × 1.2 = 1.8 M: 1.7 M is not enough, 1.9 M is.
    clock.advance(4000);
    alloc.setEstimate(1_700_000, clock.now());
    expect(alloc.allocate(a, 0, clock.now()).get('a')).toBe(2);
    alloc.setEstimate(1_900_000, clock.now());
    expect(alloc.allocate(a, 0, clock.now()).get('a')).toBe(3);
    // Hovering just above f's bitrate keeps f (no headroom needed to stay).
    alloc.setEstimate(1_550_000, clock.now());
    expect(alloc.allocate(a, 0, clock.now()).get('a')).toBe(3);
  });

  it('tries one layer up when the estimate is limited by what it receives, and backs off after a failed try', () => {
    const clock = createManualClock();
    const alloc = new BandwidthAllocator({ upHoldMs: 4000, appLimitedFactor: 1.3, probeFailMs: 5000, maxHoldMs: 16_000 });
    const a = [track('a', 3)];
    const step = (estimate: number, ms = 0): number | undefined => {
      clock.advance(ms);
      alloc.setEstimate(estimate, clock.now());
      return alloc.allocate(a, 0, clock.now()).get('a');
    };
    expect(step(2_000_000)).toBe(3);
    expect(step(200_000)).toBe(1); // congestion: q
    // A REMB estimator then reports about 1.5 × what it receives (q: 150 k): never enough for h.
    expect(step(235_000, 1000)).toBe(1); // within the hold
    expect(step(235_000, 3000)).toBe(2); // hold over, estimate limited by us: try h
    // The try fails (the link really is narrow): back to q, the hold doubles to 8 s.
    expect(step(180_000, 500)).toBe(1);
    expect(step(235_000, 4000)).toBe(1);
    expect(step(235_000, 4000)).toBe(2);
    // This time the link carries it: the estimate follows h (1.5 × 500 k) and the next try goes to f.
    expect(step(760_000, 1000)).toBe(2);
    expect(step(760_000, 8000)).toBe(3);
    // Staying on a layer needs no headroom.
    expect(step(1_550_000, 6000)).toBe(3);
  });

  it('a lower request is not a bandwidth step down: raising it again is not held', () => {
    const clock = createManualClock();
    const alloc = new BandwidthAllocator({ upHoldMs: 4000 });
    alloc.setEstimate(5_000_000, clock.now());
    expect(alloc.allocate([track('a', 1)], 0, clock.now()).get('a')).toBe(1);
    clock.advance(100);
    expect(alloc.allocate([track('a', 3)], 0, clock.now()).get('a')).toBe(3);
  });

  it('forgets tracks no longer passed', () => {
    const clock = createManualClock();
    const alloc = new BandwidthAllocator();
    alloc.setEstimate(1_000_000, clock.now());
    alloc.allocate([track('a', 3)], 0, clock.now());
    alloc.setEstimate(200_000, clock.now());
    alloc.allocate([track('a', 3)], 0, clock.now());
    alloc.allocate([], 0, clock.now());
    // A new track under the same id starts fresh (no hold from the old step down).
    alloc.setEstimate(5_000_000, clock.now());
    expect(alloc.allocate([track('a', 3)], 0, clock.now()).get('a')).toBe(3);
  });
});
