/**
 * Time as a dependency. Everything that waits, expires or timestamps takes a `Clock` so tests
 * can move time forward by hand instead of sleeping. `systemClock` is the real one;
 * `createManualClock` is the test twin, whose timers fire only when `advance()` passes them.
 */

export interface TimerHandle {
  /** Opaque; only valid for `clearTimeout` of the clock that made it. */
  readonly id: number;
}

export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle | undefined): void;
}

let nextSystemId = 1;

export function createSystemClock(): Clock {
  const timers = new Map<number, NodeJS.Timeout>();
  return {
    now: () => Date.now(),
    setTimeout(fn, ms) {
      const id = nextSystemId++;
      const t = setTimeout(() => {
        timers.delete(id);
        fn();
      }, Math.max(0, ms));
      t.unref?.();
      timers.set(id, t);
      return { id };
    },
    clearTimeout(handle) {
      if (!handle) return;
      const t = timers.get(handle.id);
      if (t) clearTimeout(t);
      timers.delete(handle.id);
    },
  };
}

export const systemClock: Clock = createSystemClock();

export interface ManualClock extends Clock {
  /** Moves time forward, firing due timers in deadline order (a timer may schedule another). */
  advance(ms: number): void;
  /** Number of timers still pending. */
  pending(): number;
}

export function createManualClock(startMs = 1_700_000_000_000): ManualClock {
  let now = startMs;
  let nextId = 1;
  const timers = new Map<number, { due: number; seq: number; fn: () => void }>();
  const clock: ManualClock = {
    now: () => now,
    setTimeout(fn, ms) {
      const id = nextId++;
      timers.set(id, { due: now + Math.max(0, ms), seq: id, fn });
      return { id };
    },
    clearTimeout(handle) {
      if (handle) timers.delete(handle.id);
    },
    advance(ms) {
      const target = now + ms;
      for (;;) {
        let first: [number, { due: number; seq: number; fn: () => void }] | undefined;
        for (const entry of timers) {
          const [, t] = entry;
          if (t.due > target) continue;
          if (!first || t.due < first[1].due || (t.due === first[1].due && t.seq < first[1].seq)) {
            first = entry;
          }
        }
        if (!first) break;
        timers.delete(first[0]);
        now = first[1].due;
        first[1].fn();
      }
      now = target;
    },
    pending: () => timers.size,
  };
  return clock;
}

/** A task run every interval on a clock (see `repeatEvery`). */
export interface Repeating {
  /** Schedules the next run; idempotent; does nothing once stopped. */
  start(): void;
  /** Cancels the pending run for good. */
  stop(): void;
}

/**
 * Runs `tick` every `intervalMs` on `clock` (each run scheduled after the previous one ends, so
 * runs never overlap) until stopped. A throwing tick is passed to `onError` and the next run is
 * still scheduled: one bad round never ends the repetition or reaches the clock.
 */
export function repeatEvery(clock: Clock, intervalMs: number, tick: () => void, onError: (err: unknown) => void): Repeating {
  let timer: TimerHandle | undefined;
  let stopped = false;
  const repeating: Repeating = {
    start() {
      if (stopped || timer !== undefined) return;
      timer = clock.setTimeout(() => {
        timer = undefined;
        try {
          tick();
        } catch (err) {
          onError(err);
        }
        repeating.start();
      }, intervalMs);
    },
    stop() {
      stopped = true;
      clock.clearTimeout(timer);
      timer = undefined;
    },
  };
  return repeating;
}
