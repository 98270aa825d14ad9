/**
 * A short seeded run of every in-process fuzz target (test/fuzz), so a parser regression that
 * the full `npm run fuzz` would find shows up in `npm test` too: a few thousand cases each, with
 * a fixed seed (the same inputs every run), no crash and no case slower than the stall bound.
 */
import { describe, expect, it } from 'vitest';
import { runTarget } from '../fuzz/runner.ts';
import { TARGETS } from '../fuzz/targets/index.ts';

const SMOKE_CASES: Record<string, number> = {
  'token-body': 5000,
  'appservice-events': 2000,
  'twirp-body': 3000,
  'signal-frame': 1500,
  'sdp': 3000,
  'rtp-forward': 3000,
  'media-port': 20000,
};

describe('fuzz targets, seeded smoke run', () => {
  it('names a case count for every target', () => {
    expect(TARGETS.map((t) => t.name).toSorted()).toEqual(Object.keys(SMOKE_CASES).toSorted());
  });

  for (const target of TARGETS) {
    it(`${target.name}: ${SMOKE_CASES[target.name]} cases without a crash or a stall`, { timeout: 60_000 }, async () => {
      const r = await runTarget(target, { cases: SMOKE_CASES[target.name]!, seed: 20261201 });
      expect(r.firstCrash?.error ?? '').toBe('');
      expect(r.crashes).toBe(0);
      expect(r.stalls).toBe(0);
      expect(r.cases).toBe(SMOKE_CASES[target.name]);
    });
  }
});
