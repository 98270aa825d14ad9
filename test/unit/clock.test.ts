import { describe, expect, it } from 'vitest';
import { createManualClock, repeatEvery } from '../../common/clock.ts';

describe('manual clock', () => {
  it('fires timers in deadline order only when time passes them', () => {
    const clock = createManualClock(1000);
    const fired: string[] = [];
    clock.setTimeout(() => fired.push('b'), 200);
    clock.setTimeout(() => fired.push('a'), 100);
    const c = clock.setTimeout(() => fired.push('c'), 150);
    clock.clearTimeout(c);
    clock.advance(99);
    expect(fired).toEqual([]);
    clock.advance(1);
    expect(fired).toEqual(['a']);
    expect(clock.now()).toBe(1100);
    clock.advance(500);
    expect(fired).toEqual(['a', 'b']);
    expect(clock.now()).toBe(1600);
    expect(clock.pending()).toBe(0);
  });

  it('runs timers scheduled by a firing timer within the same advance', () => {
    const clock = createManualClock(0);
    const at: number[] = [];
    clock.setTimeout(() => {
      at.push(clock.now());
      clock.setTimeout(() => at.push(clock.now()), 10);
    }, 10);
    clock.advance(25);
    expect(at).toEqual([10, 20]);
  });
});

describe('repeatEvery', () => {
  it('runs every interval, survives a throwing round, and stops for good', () => {
    const clock = createManualClock(0);
    const runs: number[] = [];
    const errors: unknown[] = [];
    const task = repeatEvery(clock, 100, () => {
      runs.push(clock.now());
      if (runs.length === 2) throw new Error('bad round');
    }, (err) => errors.push(err));
    task.start();
    task.start(); // idempotent: still one pending run
    expect(clock.pending()).toBe(1);
    clock.advance(350);
    expect(runs).toEqual([100, 200, 300]);
    expect(errors).toHaveLength(1);
    task.stop();
    task.start();
    clock.advance(500);
    expect(runs).toEqual([100, 200, 300]);
    expect(clock.pending()).toBe(0);
  });
});
