import { describe, expect, it } from 'vitest';
import { createManualClock, createSystemClock, MAX_TIMER_MS, repeatEvery, type TimerHost } from '../../common/clock.ts';

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

/** Node's timers as a twin: a delay above 2^31-1 ms fires after 1 ms, exactly as Node does it. */
function nodeLikeHost(start = 0) {
  let now = start;
  const pending = new Map<object, { due: number; fn: () => void }>();
  const armed: number[] = [];
  const host: TimerHost = {
    now: () => now,
    setTimeout(fn, ms) {
      armed.push(ms);
      const handle = {};
      pending.set(handle, { due: now + (ms > MAX_TIMER_MS ? 1 : ms), fn });
      return handle;
    },
    clearTimeout(handle) {
      pending.delete(handle);
    },
  };
  return {
    host,
    armed,
    pending: () => pending.size,
    advance(ms: number) {
      const target = now + ms;
      for (;;) {
        const next = [...pending].filter(([, t]) => t.due <= target).toSorted((a, b) => a[1].due - b[1].due)[0];
        if (!next) break;
        pending.delete(next[0]);
        now = next[1].due;
        next[1].fn();
      }
      now = target;
    },
  };
}

describe('system clock with delays beyond what setTimeout honours', () => {
  const DAY = 86_400_000;

  it('fires a 3e9 ms timer at 3e9 ms, waiting it out in chunks the host honours', () => {
    const h = nodeLikeHost();
    const clock = createSystemClock(h.host);
    const fired: number[] = [];
    clock.setTimeout(() => fired.push(h.host.now()), 3e9);
    expect(h.armed).toEqual([MAX_TIMER_MS]);
    h.advance(1000);
    expect(fired).toEqual([]);
    h.advance(MAX_TIMER_MS);
    expect(fired).toEqual([]);
    expect(h.armed).toEqual([MAX_TIMER_MS, 3e9 - MAX_TIMER_MS]);
    h.advance(3e9);
    expect(fired).toEqual([3e9]);
    expect(h.pending()).toBe(0);
  });

  it('cancels a long timer between chunks', () => {
    const h = nodeLikeHost();
    const clock = createSystemClock(h.host);
    let fired = false;
    const t = clock.setTimeout(() => (fired = true), 100 * DAY);
    h.advance(30 * DAY);
    expect(h.pending()).toBe(1);
    clock.clearTimeout(t);
    expect(h.pending()).toBe(0);
    h.advance(100 * DAY);
    expect(fired).toBe(false);
  });

  it('treats NaN and negative delays as 0 and never fires Infinity, like the manual clock', () => {
    const h = nodeLikeHost();
    const system = createSystemClock(h.host);
    const manual = createManualClock(0);
    const seen: Record<string, string[]> = { system: [], manual: [] };
    for (const [name, clock] of [['system', system], ['manual', manual]] as const) {
      clock.setTimeout(() => seen[name]!.push('nan'), Number.NaN);
      clock.setTimeout(() => seen[name]!.push('negative'), -5);
      clock.setTimeout(() => seen[name]!.push('infinity'), Infinity);
      clock.setTimeout(() => seen[name]!.push('huge'), 3e9);
    }
    h.advance(0);
    manual.advance(0);
    expect(seen.system).toEqual(['nan', 'negative']);
    expect(seen.manual).toEqual(['nan', 'negative']);
    h.advance(3e9);
    manual.advance(3e9);
    expect(seen.system).toEqual(['nan', 'negative', 'huge']);
    expect(seen.manual).toEqual(['nan', 'negative', 'huge']);
    expect(h.pending()).toBe(0);
  });

  it('on Node\'s real timers, a 3e9 ms timer has not fired when a 5 ms one does', async () => {
    const clock = createSystemClock();
    let longFired = false;
    const long = clock.setTimeout(() => (longFired = true), 3e9);
    await new Promise<void>((resolve) => clock.setTimeout(resolve, 5));
    clock.clearTimeout(long);
    expect(longFired).toBe(false);
  });
});
