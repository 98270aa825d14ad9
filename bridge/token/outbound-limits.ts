/**
 * Bounds on what the token service does on a client's behalf towards other servers: an LRU
 * cache with a size cap and per-entry expiry on the injected clock (server-name resolutions,
 * failures remembered briefly), and a concurrency limit with a bounded queue for outbound
 * federation look-ups. When the queue is full a look-up is refused at once with
 * `FederationBusyError`, a 503 `M_LIMIT_EXCEEDED` with `Retry-After`, instead of piling up
 * requests (and sockets) without end.
 */
import type { Clock } from '../../common/clock.ts';
import { MatrixError } from '../http/matrix-error.ts';

/** Map-backed LRU: `get` refreshes recency, `set` evicts the least recently used over `cap`. */
export class ExpiringLru<V> {
  private readonly entries = new Map<string, { value: V; until: number }>();
  private readonly clock: Clock;
  readonly cap: number;
  constructor(clock: Clock, cap: number) {
    this.clock = clock;
    this.cap = cap;
  }

  get(key: string): V | undefined {
    const hit = this.entries.get(key);
    if (!hit) return undefined;
    this.entries.delete(key);
    if (hit.until <= this.clock.now()) return undefined;
    this.entries.set(key, hit);
    return hit.value;
  }

  set(key: string, value: V, ttlMs: number): void {
    this.entries.delete(key);
    this.entries.set(key, { value, until: this.clock.now() + ttlMs });
    while (this.entries.size > this.cap) this.entries.delete(this.entries.keys().next().value!);
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  get size(): number {
    return this.entries.size;
  }
}

/** Seconds a client is told to wait when the look-up queue is full. */
export const BUSY_RETRY_AFTER_SECONDS = 5;

/**
 * The outbound look-up queue is full. A MatrixError, so every token endpoint answers it as is:
 * 503 with `Retry-After` and `retry_after_ms` (M_LIMIT_EXCEEDED is the code Matrix clients
 * already treat as "wait, then retry"; 503 because the whole service, not this client, is over
 * its limit).
 */
export class FederationBusyError extends MatrixError {
  constructor(retryAfterSeconds = BUSY_RETRY_AFTER_SECONDS) {
    super(503, 'M_LIMIT_EXCEEDED', 'Too many federation look-ups in progress; retry later', {
      headers: { 'Retry-After': String(retryAfterSeconds) },
      fields: { retry_after_ms: retryAfterSeconds * 1000 },
    });
    this.name = 'FederationBusyError';
  }
}

export interface ConcurrencyLimiter {
  /** Runs `task` when a slot is free; throws FederationBusyError when the queue is full. */
  run<T>(task: () => Promise<T>): Promise<T>;
  readonly active: number;
  readonly queued: number;
}

export function createConcurrencyLimiter(maxActive: number, maxQueued: number): ConcurrencyLimiter {
  let active = 0;
  const queue: (() => void)[] = [];
  const release = () => {
    const next = queue.shift();
    if (next) next();
    else active--;
  };
  return {
    async run(task) {
      if (active >= maxActive) {
        if (queue.length >= maxQueued) throw new FederationBusyError();
        await new Promise<void>((resolve) => queue.push(resolve));
      } else active++;
      try {
        return await task();
      } finally {
        release();
      }
    },
    get active() {
      return active;
    },
    get queued() {
      return queue.length;
    },
  };
}
