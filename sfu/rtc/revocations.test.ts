/**
 * Revoked tokens: refused while a token issued before the revocation could still be valid,
 * forgotten after that, and never more than the cap kept.
 */
import { describe, expect, it } from 'vitest';
import { createManualClock } from '../../common/clock.ts';
import { createRevocations } from './revocations.ts';

describe('revocations', () => {
  it('refuses tokens issued before the revocation time and admits later ones', () => {
    const clock = createManualClock(1_700_000_000_000);
    const r = createRevocations({ clock });
    r.revoke('room', 'alice', 1_700_000_000n);
    expect(r.isRevoked('room', 'alice', 1_699_999_999)).toBe(true);
    expect(r.isRevoked('room', 'alice', 1_700_000_000)).toBe(false);
    expect(r.isRevoked('room', 'bob', 1_600_000_000)).toBe(false);
    expect(r.isRevoked('other', 'alice', 1_600_000_000)).toBe(false);
  });

  it('keeps the later of two revocations of one identity', () => {
    const r = createRevocations({ clock: createManualClock(1_700_000_000_000) });
    r.revoke('room', 'alice', 1_700_000_100n);
    r.revoke('room', 'alice', 1_700_000_000n);
    expect(r.isRevoked('room', 'alice', 1_700_000_050)).toBe(true);
  });

  it('forgets a revocation once every token it could refuse has expired', () => {
    const clock = createManualClock(1_700_000_000_000);
    const r = createRevocations({ clock, maxTokenLifetimeMs: 3_600_000 });
    r.revoke('room', 'alice', 1_700_000_000n);
    clock.advance(3_600_000);
    expect(r.isRevoked('room', 'alice', 1_699_999_000)).toBe(true);
    clock.advance(1);
    r.revoke('room', 'bob', 1_700_003_601n); // a later write sweeps what expired
    expect(r.size).toBe(1);
    expect(r.isRevoked('room', 'alice', 1_699_999_000)).toBe(false);
  });

  it('keeps at most the cap, dropping the oldest revocations first', () => {
    const r = createRevocations({ clock: createManualClock(1_700_000_000_000), maxEntries: 3 });
    for (let i = 0; i < 10; i++) r.revoke('room', `p${i}`, 1_700_000_000n);
    expect(r.size).toBe(3);
    expect(r.isRevoked('room', 'p0', 1)).toBe(false);
    expect(r.isRevoked('room', 'p9', 1)).toBe(true);
  });
});
