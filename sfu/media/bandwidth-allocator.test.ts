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
  /** An allocator that has been forwarding `tracks` uncapped, then hears `estimate`. */
  function congested(tracks: AllocatorTrack[], estimate: number, reserved = 0, now = 0): BandwidthAllocator {
    const alloc = new BandwidthAllocator();
    alloc.setEstimate(50_000_000, now);
    alloc.allocate(tracks, reserved, now);
    alloc.setEstimate(estimate, now);
    return alloc;
  }

  it('caps nothing while no estimate is known, without congestion, or once the estimate is stale', () => {
    const clock = createManualClock();
    const alloc = new BandwidthAllocator();
    expect(alloc.allocate([track('a')], 0, clock.now()).get('a')).toBe(Number.POSITIVE_INFINITY);
    alloc.setEstimate(0, clock.now()); // "no estimate yet"
    expect(alloc.estimateBps(clock.now())).toBeUndefined();
    // A first estimate above what we send is no congestion.
    alloc.setEstimate(5_000_000, clock.now());
    expect(alloc.allocate([track('a')], 0, clock.now()).get('a')).toBe(Number.POSITIVE_INFINITY);
    alloc.setEstimate(200_000, clock.now());
    expect(alloc.allocate([track('a')], 0, clock.now()).get('a')).toBe(1);
    clock.advance(10_001);
    expect(alloc.estimateBps(clock.now())).toBeUndefined();
    expect(alloc.allocate([track('a')], 0, clock.now()).get('a')).toBe(Number.POSITIVE_INFINITY);
  });

  it('on congestion gives the highest layer that fits, never above the request, and the lowest when nothing fits', () => {
    const cases: [estimate: number, requested: number, expected: number][] = [
      [1_000_000, Number.POSITIVE_INFINITY, 2],
      [1_000_000, 1, 1],
      [600_000, 3, 2],
      [400_000, 3, 1],
      [50_000, 3, 1],
      [100_000, 0, 1], // below every layer: the lowest one
    ];
    for (const [estimate, requested, expected] of cases) {
      const alloc = congested([track('a', Math.max(requested, 3))], estimate);
      expect(alloc.allocate([track('a', requested)], 0, 0).get('a'), `${estimate} bps, rank ${requested}`).toBe(expected);
    }
  });

  it('spends reserved (audio) bandwidth first and serves the largest request first', () => {
    const tracks = [track('small', 2), track('big', 3)];
    const alloc = congested(tracks, 1_750_000, 100_001);
    const caps = alloc.allocate(tracks, 100_001, 0);
    expect(caps.get('big')).toBe(3);
    expect(caps.get('small')).toBe(1);
  });

  it('a non-simulcast track is never capped but its bitrate counts', () => {
    const tracks = [track('plain', 3, [{ rank: 0, bitrate: 600_000 }]), track('sim', 2)];
    const alloc = congested(tracks, 900_000);
    const caps = alloc.allocate(tracks, 0, 0);
    expect(caps.get('plain')).toBe(Number.POSITIVE_INFINITY);
    expect(caps.get('sim')).toBe(1);
  });

  it('an unmeasured layer fits only when the one below it does', () => {
    const layers = [
      { rank: 1, bitrate: 400_000 },
      { rank: 2, bitrate: 0 },
      { rank: 3, bitrate: 0 },
    ];
    expect(congested([track('a', 3, SIMULCAST)], 300_000).allocate([track('a', 3, layers)], 0, 0).get('a')).toBe(1);
    const fits = congested([track('a', 3, SIMULCAST)], 450_000);
    expect(fits.allocate([track('a', 3, layers)], 0, 0).get('a')).toBe(3);
  });

  it('a low estimate that is not a decrease is no congestion: a tile grown back gets its layer at once', () => {
    const clock = createManualClock();
    const alloc = new BandwidthAllocator();
    // Shrunk tile: only q is sent, and the receiver's estimate follows what it receives.
    alloc.setEstimate(200_000, clock.now());
    expect(alloc.allocate([track('a', 1)], 0, clock.now()).get('a')).toBe(Number.POSITIVE_INFINITY);
    clock.advance(1000);
    alloc.setEstimate(230_000, clock.now());
    // Grown back: served at once although the estimate is still far below f.
    expect(alloc.allocate([track('a', 3)], 0, clock.now()).get('a')).toBe(Number.POSITIVE_INFINITY);
    clock.advance(1000);
    alloc.setEstimate(260_000, clock.now()); // ramping up, below what we send, but not a decrease
    expect(alloc.allocate([track('a', 3)], 0, clock.now()).get('a')).toBe(Number.POSITIVE_INFINITY);
  });

  it('holds caps after congestion, lifts them after the hold, and holds twice as long when that congests again', () => {
    const clock = createManualClock();
    const a = [track('a', 3)];
    const step = (estimate: number, advance = 0) => {
      clock.advance(advance);
      alloc.setEstimate(estimate, clock.now());
      return alloc.allocate(a, 0, clock.now()).get('a');
    };
    const alloc = new BandwidthAllocator();
    expect(step(5_000_000)).toBe(Number.POSITIVE_INFINITY); // f sent
    expect(step(700_000, 1000)).toBe(2); // congestion: h fits
    expect(step(800_000, 1000)).toBe(2); // rising, but f needs 1.2 × 1.5 M during the hold
    expect(step(1_900_000, 1000)).toBe(3); // enough headroom for f within the hold
    // Congested half a second after going up: that step failed, the hold doubles to 8 s.
    expect(step(1_000_000, 500)).toBe(2);
    expect(step(1_000_000, 4100)).toBe(2);
    expect(step(1_000_000, 4000)).toBe(Number.POSITIVE_INFINITY); // hold over: lifted, f again
    // Congested right after that return: 16 s.
    expect(step(400_000, 1000)).toBe(1);
    expect(step(420_000, 8000)).toBe(1);
    expect(step(440_000, 8100)).toBe(Number.POSITIVE_INFINITY);
  });

  it('forgets tracks no longer passed', () => {
    const alloc = congested([track('a', 3)], 200_000);
    alloc.allocate([track('a', 3)], 0, 0);
    alloc.allocate([], 0, 0);
    // A new track under the same id starts fresh (no hold from the old step down).
    alloc.setEstimate(5_000_000, 0);
    expect(alloc.allocate([track('a', 3)], 0, 0).get('a')).toBe(3);
  });
});
