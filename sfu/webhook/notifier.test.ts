/**
 * The webhook notifier against a real HTTP receiver on loopback that verifies each request with
 * livekit-server-sdk's WebhookReceiver. Retry waits run on a manual clock, so no test sleeps.
 */
import { ParticipantInfo, Room, TrackInfo, TrackType } from '@livekit/protocol';
import { TokenVerifier } from 'livekit-server-sdk';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { createManualClock, systemClock, type ManualClock } from '../../common/clock.ts';
import { createSilentLogger } from '../../common/logger.ts';
import { waitFor } from '../../test/support/wait.ts';
import { createSfuMetrics } from '../metrics.ts';
import type { SfuEvent } from '../room-service-api.ts';
import { createWebhookNotifier, type WebhookNotifier, type WebhookNotifierOptions } from './notifier.ts';
import { bodySha256 } from './signing.ts';
import { startTestWebhookReceiver, type TestWebhookReceiver } from '../../test/support/webhook-receiver.ts';

const KEY = 'hookkey';
const SECRET = 'h'.repeat(40);

const room = new Room({ sid: 'RM_1', name: 'room-1', creationTime: 1_700_000_000n, emptyTimeout: 300 });
const alice = new ParticipantInfo({ sid: 'PA_1', identity: 'alice', joinedAt: 1_700_000_001n });
const mic = new TrackInfo({ sid: 'TR_1', type: TrackType.AUDIO, name: 'mic' });
const events: SfuEvent[] = [
  { type: 'room_started', room },
  { type: 'participant_joined', room, participant: alice },
  { type: 'track_published', room, participant: alice, track: mic },
  { type: 'track_unpublished', room, participant: alice, track: mic },
  { type: 'participant_left', room, participant: alice },
  { type: 'room_finished', room },
];

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).toReversed()) await c();
});

async function receiver(respond?: (n: number) => number | 'hang'): Promise<TestWebhookReceiver> {
  const r = await startTestWebhookReceiver({ apiKey: KEY, apiSecret: SECRET, ...(respond ? { respond } : {}) });
  cleanups.push(() => r.stop());
  return r;
}

function notifier(urls: string[], extra: Partial<WebhookNotifierOptions> = {}) {
  const registry = new Registry();
  const metrics = createSfuMetrics(registry);
  const n: WebhookNotifier = createWebhookNotifier({
    urls,
    apiKey: KEY,
    apiSecret: SECRET,
    clock: systemClock,
    logger: createSilentLogger(),
    metrics: metrics.webhook,
    ...extra,
  });
  cleanups.push(() => n.stop());
  return { n, registry };
}

/** Real time now, so the receiver's own expiry check accepts the tokens. */
function manualClock(): ManualClock {
  return createManualClock(Date.now());
}

/**
 * The notifier has had `n` failed attempts answered (so its backoff timer, not the request's
 * timeout timer, is the one pending on the clock: both run on it).
 */
async function failedAttempts(registry: Registry, n: number): Promise<boolean> {
  return (await metricValue(registry, 'matrixrtc_sfu_webhook_attempt_failures_total', '{reason="status"}')) === n;
}

async function metricValue(registry: Registry, name: string, labels = ''): Promise<number> {
  const text = await registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `) || (labels === '' && l.startsWith(`${name} `)));
  return line ? Number(line.split(' ').pop()) : 0;
}

describe('webhook notifier', () => {
  it('delivers each event, in order, signed as LiveKit signs them', async () => {
    const r = await receiver();
    const { n, registry } = notifier([r.url]);
    for (const e of events) n.notify(e);
    await n.idle();
    expect(r.requests.map((q) => q.error)).toEqual(events.map(() => undefined));
    expect(r.accepted().map((e) => e.event)).toEqual(events.map((e) => e.type));
    const joined = r.accepted()[1]!;
    expect(joined.room?.name).toBe('room-1');
    expect(joined.participant?.identity).toBe('alice');
    expect(r.accepted()[2]!.track?.sid).toBe('TR_1');
    expect(joined.id).toMatch(/^EV_[0-9A-Za-z]{12}$/);
    expect(new Set(r.accepted().map((e) => e.id)).size).toBe(events.length);
    expect(Number(joined.createdAt)).toBeGreaterThan(Date.now() / 1000 - 60);

    const req = r.requests[1]!;
    expect(req.headers['content-type']).toBe('application/webhook+json');
    expect(req.headers.authorization).not.toMatch(/^Bearer /);
    const claims = await new TokenVerifier(KEY, SECRET).verify(req.headers.authorization!);
    expect(claims.iss).toBe(KEY);
    expect(claims.sha256).toBe(bodySha256(req.body));
    expect(claims.sha256).toMatch(/=$/); // padded base64 (32 bytes -> one '=')
    expect(claims.exp! - claims.nbf!).toBe(300);
    // camelCase protojson with int64 as strings, as LiveKit's server writes it.
    const body = JSON.parse(req.body) as Record<string, Record<string, unknown>>;
    expect(body.room).toMatchObject({ name: 'room-1', creationTime: '1700000000', emptyTimeout: 300 });
    expect(body.participant).toMatchObject({ identity: 'alice', joinedAt: '1700000001' });
    expect(typeof body.createdAt).toBe('string');
    expect(await metricValue(registry, 'matrixrtc_sfu_webhook_deliveries_total', '{event="participant_joined"}')).toBe(1);
  });

  it('keeps a copy: later changes to the session objects do not leak into a queued event', async () => {
    const r = await receiver();
    const { n } = notifier([r.url]);
    const p = new ParticipantInfo({ identity: 'bob', metadata: 'before' });
    n.notify({ type: 'participant_joined', room, participant: p });
    p.metadata = 'after';
    await n.idle();
    expect(r.accepted()[0]!.participant?.metadata).toBe('before');
  });

  it('retries a receiver that answers 500, waiting the backoff on the clock, then delivers', async () => {
    const clock = manualClock();
    const r = await receiver((i) => (i <= 2 ? 500 : 200));
    const { n, registry } = notifier([r.url], { clock, initialBackoffMs: 1000, maxBackoffMs: 10_000 });
    n.notify(events[1]!);
    n.notify(events[4]!);
    await waitFor('first attempt', async () => (await failedAttempts(registry, 1)) && clock.pending() === 1);
    clock.advance(999);
    expect(r.requests.length).toBe(1);
    clock.advance(1);
    await waitFor('second attempt', async () => (await failedAttempts(registry, 2)) && clock.pending() === 1);
    // Backoff doubles: nothing before 2000 ms.
    clock.advance(1999);
    expect(r.requests.length).toBe(2);
    clock.advance(1);
    await n.idle();
    expect(r.requests.length).toBe(4);
    expect(r.accepted().map((e) => e.event)).toEqual(['participant_joined', 'participant_left']);
    // The retried event is the same event (same id), re-signed.
    expect(new Set(r.requests.slice(0, 3).map((q) => q.event?.id)).size).toBe(1);
    expect(await metricValue(registry, 'matrixrtc_sfu_webhook_attempt_failures_total', '{reason="status"}')).toBe(2);
    expect(await metricValue(registry, 'matrixrtc_sfu_webhook_deliveries_total', '{event="participant_joined"}')).toBe(1);
  });

  it('gives up on an event after maxAttempts and still delivers the next ones in order', async () => {
    const clock = manualClock();
    const r = await receiver((i) => (i <= 3 ? 503 : 200));
    const { n, registry } = notifier([r.url], { clock, maxAttempts: 3, initialBackoffMs: 10 });
    n.notify(events[0]!);
    n.notify(events[1]!);
    // Advance by the backoff only: the receiver checks the token's nbf against real time.
    for (const [i, wait] of [[1, 10], [2, 20]] as const) {
      await waitFor(`attempt ${i}`, async () => (await failedAttempts(registry, i)) && clock.pending() === 1);
      clock.advance(wait);
    }
    await n.idle();
    expect(r.requests.map((q) => q.event?.event)).toEqual(['room_started', 'room_started', 'room_started', 'participant_joined']);
    expect(await metricValue(registry, 'matrixrtc_sfu_webhook_failures_total', '{event="room_started"}')).toBe(1);
  });

  it('does not retry a 4xx answer other than 429', async () => {
    const r = await receiver((i) => (i === 1 ? 400 : 200));
    const { n } = notifier([r.url], { initialBackoffMs: 1 });
    n.notify(events[0]!);
    n.notify(events[1]!);
    await n.idle();
    expect(r.requests.map((q) => q.event?.event)).toEqual(['room_started', 'participant_joined']);
  });

  it('never blocks the caller, and a hanging receiver does not delay another URL', async () => {
    const clock = manualClock();
    const slow = await receiver(() => 'hang');
    const fast = await receiver();
    const { n, registry } = notifier([slow.url, fast.url], { clock, requestTimeoutMs: 5000, initialBackoffMs: 100 });
    for (const e of events) n.notify(e);
    await waitFor('fast receiver got everything', () => fast.accepted().length === events.length);
    expect(slow.requests.length).toBe(1);
    expect(n.pending()).toBe(events.length);
    expect(await metricValue(registry, 'matrixrtc_sfu_webhook_queue_length')).toBe(events.length);
    // The hanging request times out on the clock and is retried.
    clock.advance(5000);
    await waitFor('retry timer', () => clock.pending() === 1);
    expect(await metricValue(registry, 'matrixrtc_sfu_webhook_attempt_failures_total', '{reason="timeout"}')).toBe(1);
    clock.advance(100);
    await waitFor('second attempt', () => slow.requests.length === 2);
  });

  it('treats a refused connection as a network failure and retries it', async () => {
    const clock = manualClock();
    const dead = await receiver();
    const deadUrl = dead.url;
    await dead.stop();
    const { n, registry } = notifier([deadUrl], { clock, initialBackoffMs: 50, maxAttempts: 2 });
    n.notify(events[0]!);
    await waitFor('retry scheduled', () => clock.pending() === 1);
    clock.advance(50);
    await n.idle();
    expect(await metricValue(registry, 'matrixrtc_sfu_webhook_attempt_failures_total', '{reason="network"}')).toBe(2);
    expect(await metricValue(registry, 'matrixrtc_sfu_webhook_failures_total', '{event="room_started"}')).toBe(1);
  });

  it('drops events beyond the queue bound and reports the count in the next delivered event', async () => {
    const clock = manualClock();
    const r = await receiver((i) => (i === 1 ? 500 : 200));
    const { n, registry } = notifier([r.url], { clock, maxQueue: 2, initialBackoffMs: 100 });
    n.notify(events[0]!); // in flight, will fail once
    n.notify(events[1]!); // queued
    n.notify(events[2]!); // dropped
    n.notify(events[3]!); // dropped
    expect(n.pending()).toBe(2);
    // While the first POST is in flight its timeout is the one pending timer: wait for the
    // failure to be counted, so the pending timer is the retry.
    await waitFor('retry scheduled', async () => (await failedAttempts(registry, 1)) && clock.pending() === 1);
    clock.advance(100);
    await n.idle();
    const got = r.accepted();
    expect(got.map((e) => e.event)).toEqual(['room_started', 'participant_joined']);
    // The event that was already being sent when the drops happened keeps its first body.
    expect(got[0]!.numDropped).toBe(0);
    expect(got[1]!.numDropped).toBe(2);
    expect(await metricValue(registry, 'matrixrtc_sfu_webhook_dropped_total')).toBe(2);
  });

  it('stop() drains within drainMs, then stops sending and clears the queues', async () => {
    const r = await receiver();
    const { n } = notifier([r.url]);
    n.notify(events[0]!);
    await n.stop({ drainMs: 5000 });
    expect(r.accepted().length).toBe(1);
    n.notify(events[1]!);
    expect(n.pending()).toBe(0);
  });

  it('subscribes to an event source and unsubscribes on stop', async () => {
    const r = await receiver();
    const listeners = new Set<(e: SfuEvent) => void>();
    const source = {
      onEvent(l: (e: SfuEvent) => void) {
        listeners.add(l);
        return () => listeners.delete(l);
      },
    };
    const { n } = notifier([r.url]);
    n.attach(source);
    for (const l of listeners) l(events[0]!);
    await n.idle();
    expect(r.accepted().map((e) => e.event)).toEqual(['room_started']);
    await n.stop();
    expect(listeners.size).toBe(0);
  });
});
