/**
 * Time as a dependency. Everything that waits, expires or timestamps takes a `Clock` so tests
 * can move time forward by hand instead of sleeping. `systemClock` is the real one;
 * `createManualClock` is the test twin, whose timers fire only when `advance()` passes them.
 *
 * Both fire a timer at exactly `now() + ms`, however far away: Node's `setTimeout` fires after
 * 1 ms for anything above 2^31-1 ms (about 24.8 days), so the system clock waits out a longer
 * delay in chunks of at most that, re-arming on real time until the deadline. Without this an
 * outside value such as a membership's `expires: 3e9` re-armed its timer every millisecond.
 * NaN and negative delays count as 0 (Node's rule); `Infinity` never fires on either clock.
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

/** The longest delay the host's `setTimeout` honours (2^31-1 ms); longer ones are chunked. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** The delay a clock waits for `ms`: NaN and negatives are 0. */
function delayOf(ms: number): number {
  return ms > 0 ? ms : 0;
}

/** The host timers the system clock runs on (Node's globals; a test passes a recording twin). */
export interface TimerHost {
  now(): number;
  setTimeout(fn: () => void, ms: number): { unref?(): unknown };
  clearTimeout(handle: { unref?(): unknown }): void;
}

const nodeTimers: TimerHost = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export function createSystemClock(host: TimerHost = nodeTimers): Clock {
  /** Pending timers: the host handle of the current chunk, null for a delay of Infinity. */
  const timers = new Map<number, { unref?(): unknown } | null>();
  function arm(id: number, deadline: number, fn: () => void): void {
    const left = Math.max(0, deadline - host.now());
    const chunked = left > MAX_TIMER_MS;
    const t = host.setTimeout(() => {
      if (!timers.has(id)) return;
      if (chunked) return arm(id, deadline, fn); // one chunk of a delay longer than the host allows
      timers.delete(id);
      fn();
    }, chunked ? MAX_TIMER_MS : left);
    t.unref?.();
    timers.set(id, t);
  }
  return {
    now: () => host.now(),
    setTimeout(fn, ms) {
      const id = nextSystemId++;
      const delay = delayOf(ms);
      if (delay === Infinity) timers.set(id, null);
      else arm(id, host.now() + delay, fn);
      return { id };
    },
    clearTimeout(handle) {
      if (!handle) return;
      const t = timers.get(handle.id);
      if (t) host.clearTimeout(t);
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
      timers.set(id, { due: now + delayOf(ms), seq: id, fn });
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
