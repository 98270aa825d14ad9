/**
 * The UDP port pool: one block per peer connection, handed out round-robin, none when the range
 * is used up, given back once.
 */
import { describe, expect, it } from 'vitest';
import { PortPool } from './port-pool.ts';

describe('PortPool', () => {
  it('hands out every port once, then none, and reuses a freed port last', () => {
    const pool = new PortPool([5000, 5002]);
    const a = pool.take()!;
    const b = pool.take()!;
    const c = pool.take()!;
    expect([a.range, b.range, c.range]).toEqual([[5000, 5000], [5001, 5001], [5002, 5002]]);
    expect(pool.take()).toBeUndefined();
    expect(pool.hasFree()).toBe(false);
    b.release();
    b.release(); // idempotent: frees one block, not two
    expect(pool.inUse).toBe(2);
    expect(pool.take()!.range).toEqual([5001, 5001]);
    expect(pool.take()).toBeUndefined();
    a.release();
    c.release();
    // Round-robin: the cursor is past 5001, so 5002 (freed later) comes before 5000.
    expect(pool.take()!.range).toEqual([5002, 5002]);
  });

  it('cuts the range into blocks of one port per gathered address', () => {
    const pool = new PortPool([6000, 6006], 2);
    expect(pool.capacity).toBe(3);
    expect(pool.take()!.range).toEqual([6000, 6001]);
    expect(pool.portsInUse).toBe(2);
  });
});
