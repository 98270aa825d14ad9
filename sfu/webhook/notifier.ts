/**
 * Delivers `SfuEvent`s as LiveKit webhooks to every configured URL.
 *
 * `notify(event)` only builds the message and appends it to one bounded queue per URL; it never
 * waits on the network, so a slow or dead receiver cannot slow the session layer or media. Each
 * URL has one worker that sends its queue in order, one request at a time: an event is retried
 * with exponential backoff (on network errors, timeouts, 429 and 5xx other than 501, as
 * LiveKit's retrying HTTP client does) until `maxAttempts`, then given up so later events still
 * flow. A full queue drops the new event and reports the count in the next delivered event's
 * `numDropped`. Timers use the injected clock; requests use the injected `fetch`.
 *
 * Lifecycle: create, `attach(source)` (or call `notify` directly), `stop()` at shutdown
 * (optionally after waiting up to `drainMs` for queues to empty). Safe to call from any event
 * listener; it never throws.
 */
import type { WebhookEvent } from '@livekit/protocol';
import type { Clock, TimerHandle } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import type { WebhookMetrics } from '../metrics.ts';
import type { SfuEvent, SfuEventSource } from '../room-service-api.ts';
import { WEBHOOK_CONTENT_TYPE, signWebhook, toWebhookEvent, webhookBody } from './signing.ts';

export interface WebhookNotifierOptions {
  urls: string[];
  /** The `webhook.api_key` and its secret from `keys`. */
  apiKey: string;
  apiSecret: string;
  clock: Clock;
  logger: Logger;
  metrics?: WebhookMetrics;
  fetch?: typeof globalThis.fetch;
  /** Events waiting per URL (including the one in flight); default 500. */
  maxQueue?: number;
  /** Attempts per event, first one included; default 5. */
  maxAttempts?: number;
  /** Wait before the first retry; doubles each retry up to `maxBackoffMs`. Default 1000 / 30000. */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** Per request; default 10000. */
  requestTimeoutMs?: number;
}

export interface WebhookNotifier {
  notify(event: SfuEvent): void;
  /** Subscribes to the session layer's events; returns the unsubscribe. */
  attach(source: SfuEventSource): () => void;
  /** Events not yet delivered or given up, summed over URLs. */
  pending(): number;
  /** Resolves when every queue is empty. */
  idle(): Promise<void>;
  /** Stops sending; waits up to `drainMs` (clock time) for queues to empty first. */
  stop(opts?: { drainMs?: number }): Promise<void>;
}

interface Pending {
  event: WebhookEvent;
  body?: string;
  attempts: number;
}

interface UrlQueue {
  url: string;
  items: Pending[];
  busy: boolean;
  dropped: number;
  timer?: TimerHandle;
  abort?: AbortController;
}

type Outcome = { ok: true } | { ok: false; reason: 'status' | 'network' | 'timeout'; retry: boolean; detail: string };

function retryableStatus(status: number): boolean {
  return status === 429 || (status >= 500 && status !== 501);
}

/** Where to send, for logs: scheme, host and path only (a query string may hold a secret). */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '(invalid url)';
  }
}

export function createWebhookNotifier(opts: WebhookNotifierOptions): WebhookNotifier {
  const { clock, metrics } = opts;
  const fetchFn = opts.fetch ?? globalThis.fetch;
  const maxQueue = opts.maxQueue ?? 500;
  const maxAttempts = Math.max(1, opts.maxAttempts ?? 5);
  const initialBackoff = opts.initialBackoffMs ?? 1000;
  const maxBackoff = opts.maxBackoffMs ?? 30_000;
  const timeoutMs = opts.requestTimeoutMs ?? 10_000;
  const key = { apiKey: opts.apiKey, secret: new TextEncoder().encode(opts.apiSecret) };
  const log = opts.logger.child({ component: 'webhook' });
  const queues: UrlQueue[] = opts.urls.map((url) => ({ url, items: [], busy: false, dropped: 0 }));
  const idleWaiters = new Set<() => void>();
  const unsubscribes = new Set<() => void>();
  let stopped = false;

  const pending = () => queues.reduce((n, q) => n + q.items.length, 0);
  const unregisterQueueMetric = metrics?.queueLength(pending);

  function checkIdle() {
    if (pending() > 0) return;
    for (const resolve of idleWaiters) resolve();
    idleWaiters.clear();
  }

  async function send(q: UrlQueue, item: Pending): Promise<Outcome> {
    if (item.body === undefined) {
      let event = item.event;
      if (q.dropped > 0) {
        event = event.clone();
        event.numDropped = q.dropped;
        q.dropped = 0;
      }
      item.body = webhookBody(event);
    }
    const token = await signWebhook(item.body, key, clock.now());
    const abort = new AbortController();
    q.abort = abort;
    let timedOut = false;
    const timer = clock.setTimeout(() => {
      timedOut = true;
      abort.abort();
    }, timeoutMs);
    try {
      const res = await fetchFn(q.url, {
        method: 'POST',
        headers: { 'Content-Type': WEBHOOK_CONTENT_TYPE, Authorization: token, 'User-Agent': 'LiveKit' },
        body: item.body,
        signal: abort.signal,
      });
      await res.body?.cancel().catch(() => undefined);
      if (res.ok) return { ok: true };
      return { ok: false, reason: 'status', retry: retryableStatus(res.status), detail: `status ${res.status}` };
    } catch (err) {
      if (timedOut) return { ok: false, reason: 'timeout', retry: true, detail: `no answer within ${timeoutMs} ms` };
      return { ok: false, reason: 'network', retry: true, detail: (err as Error).message };
    } finally {
      clock.clearTimeout(timer);
      q.abort = undefined;
    }
  }

  function finish(q: UrlQueue) {
    q.items.shift();
    q.busy = false;
    pump(q);
    checkIdle();
  }

  function pump(q: UrlQueue) {
    if (stopped || q.busy) return;
    const item = q.items[0];
    if (!item) return;
    q.busy = true;
    void attempt(q, item);
  }

  async function attempt(q: UrlQueue, item: Pending) {
    let outcome: Outcome;
    try {
      outcome = await send(q, item);
    } catch (err) {
      // Signing or serialising failed: retrying cannot help.
      log.error({ err, url: redactUrl(q.url), event: item.event.event }, 'webhook could not be prepared; dropped');
      metrics?.failed(item.event.event);
      finish(q);
      return;
    }
    if (stopped) return;
    item.attempts++;
    if (outcome.ok) {
      metrics?.delivered(item.event.event);
      finish(q);
      return;
    }
    metrics?.attemptFailed(outcome.reason);
    const ctx = { url: redactUrl(q.url), event: item.event.event, id: item.event.id, attempt: item.attempts };
    if (!outcome.retry || item.attempts >= maxAttempts) {
      log.warn({ ...ctx, detail: outcome.detail }, 'webhook not delivered; giving up on this event');
      metrics?.failed(item.event.event);
      finish(q);
      return;
    }
    const wait = Math.min(maxBackoff, initialBackoff * 2 ** (item.attempts - 1));
    log.info({ ...ctx, detail: outcome.detail, retryInMs: wait }, 'webhook delivery failed; will retry');
    q.timer = clock.setTimeout(() => {
      q.timer = undefined;
      if (!stopped) void attempt(q, item);
    }, wait);
  }

  const notifier: WebhookNotifier = {
    notify(event) {
      if (stopped || queues.length === 0) return;
      let message: WebhookEvent;
      try {
        message = toWebhookEvent(event, clock.now());
      } catch (err) {
        log.error({ err, type: event.type }, 'webhook event could not be built');
        return;
      }
      for (const q of queues) {
        if (q.items.length >= maxQueue) {
          q.dropped++;
          metrics?.dropped();
          log.warn({ url: redactUrl(q.url), event: message.event }, 'webhook queue full; event dropped');
          continue;
        }
        q.items.push({ event: message, attempts: 0 });
        pump(q);
      }
    },
    attach(source) {
      const off = source.onEvent((e) => notifier.notify(e));
      unsubscribes.add(off);
      return () => {
        off();
        unsubscribes.delete(off);
      };
    },
    pending,
    idle() {
      if (pending() === 0) return Promise.resolve();
      return new Promise((resolve) => idleWaiters.add(resolve));
    },
    async stop(stopOpts) {
      for (const off of unsubscribes) off();
      unsubscribes.clear();
      if (stopOpts?.drainMs && pending() > 0) {
        let timer: TimerHandle | undefined;
        await Promise.race([
          notifier.idle(),
          new Promise<void>((resolve) => {
            timer = clock.setTimeout(resolve, stopOpts.drainMs!);
          }),
        ]);
        clock.clearTimeout(timer);
      }
      stopped = true;
      for (const q of queues) {
        clock.clearTimeout(q.timer);
        q.abort?.abort();
        q.items.length = 0;
      }
      unregisterQueueMetric?.();
      checkIdle();
    },
  };
  return notifier;
}
