import { afterEach, describe, expect, it } from 'vitest';
import { createManualClock, type ManualClock } from '../../common/clock.ts';
import { createLogger } from '../../common/logger.ts';
import { createDelayedLeaveManager, JobRejectedError, MAX_DELAY_TIMEOUT_MS, type DelayedLeaveManager } from './delayed-leave.ts';
import type { ActionOutcome, DelayedEventAction, DelayedEventForm, HomeserverClient } from '../homeserver/client.ts';
import { CsApiUnresolvableError, type CsApiResolver } from './cs-api-resolver.ts';
import { createMemoryJobStore, type DelayedLeaveJobStore, type JobParams } from './job-store.ts';
import type { TokenSfuApi } from './context.ts';
import type { SfuRoomService } from '../sfu/room-service.ts';

const flush = async () => {
  for (let i = 0; i < 10; i++) await new Promise<void>((r) => setImmediate(r));
};

interface Harness {
  clock: ManualClock;
  store: DelayedLeaveJobStore;
  calls: { delayId: string; action: DelayedEventAction; at: number; user?: string; form: DelayedEventForm; cs: string }[];
  /** Scripted answers per action, consumed in order; default ok. */
  script: Record<DelayedEventAction, ActionOutcome[]>;
  present: Set<string>;
  /** Rooms ListParticipants was called for, in order. */
  listCalls: string[];
  csResolvable: boolean;
  /** Parsed log lines at warn and above. */
  warnings: { msg: string; [k: string]: unknown }[];
  manager: DelayedLeaveManager;
  advance(ms: number): Promise<void>;
}

const managers: DelayedLeaveManager[] = [];
afterEach(async () => {
  for (const m of managers.splice(0)) await m.close();
});

interface HarnessOptions {
  sanityMs?: number;
  store?: DelayedLeaveJobStore;
  clock?: ManualClock;
  /** Which action forms the homeserver serves: 'both' (default) or only 'body' like Synapse 1.132. */
  serves?: 'both' | 'body';
  /** The appservice's as_token (default 'as-token'); null = no appservice. */
  asToken?: string | null;
  /** Default 'example.com'. */
  appserviceServerName?: string;
  replicaId?: string;
  leaseMs?: number;
}

function harness(opts: HarnessOptions = {}): Harness {
  const clock = opts.clock ?? createManualClock();
  const h = {
    clock,
    store: opts.store ?? createMemoryJobStore(),
    calls: [],
    script: { restart: [], send: [] },
    present: new Set<string>(),
    listCalls: [],
    csResolvable: true,
    warnings: [],
  } as unknown as Harness;
  const homeserver: HomeserverClient = {
    async delayedEventAction(cs, delayId, action, as, form = 'path') {
      h.calls.push({ delayId, action, at: clock.now(), user: as?.userId, form, cs });
      if (form === 'path' && opts.serves === 'body') return { kind: 'unrecognized', status: 404 };
      if (form === 'body' && !as) return { kind: 'retry', status: 401, reason: 'M_MISSING_TOKEN' };
      return h.script[action].shift() ?? { kind: 'ok' };
    },
    lookupDelayedEvent: async () => undefined,
    isJoined: async () => true,
    joinedMembers: async () => new Set(),
    fedProxy: async () => ({ status: 200, content: {} }),
  };
  const sfu: TokenSfuApi & Pick<SfuRoomService, 'listParticipants'> = {
    createRoom: async () => {},
    participantExists: async (room, identity) => h.present.has(`${room}|${identity}`),
    listParticipants: async (room) => {
      h.listCalls.push(room);
      return [...h.present].filter((k) => k.startsWith(`${room}|`)).map((k) => ({ identity: k.slice(room.length + 1), joinedAtMs: 0 }));
    },
  };
  const csApi: CsApiResolver = {
    resolve: async (name) => {
      if (!h.csResolvable) throw new CsApiUnresolvableError(name, 'test');
      return `http://${name}.invalid`;
    },
  };
  h.manager = createDelayedLeaveManager({
    clock,
    logger: createLogger({ name: 'test', level: 'warn', destination: { write: (line: string) => void h.warnings.push(JSON.parse(line)) } }),
    store: h.store,
    sfu,
    homeserver,
    csApi,
    asToken: opts.asToken === null ? undefined : (opts.asToken ?? 'as-token'),
    appserviceServerName: opts.appserviceServerName ?? 'example.com',
    sanityCheckIntervalMs: opts.sanityMs ?? 0,
    replicaId: opts.replicaId,
    leaseMs: opts.leaseMs,
    random: () => 0.5,
  });
  managers.push(h.manager);
  h.advance = async (ms: number) => {
    // Step in small slices so async continuations can schedule their timers in between.
    const step = 100;
    for (let done = 0; done < ms; done += step) {
      clock.advance(Math.min(step, ms - done));
      await flush();
    }
  };
  return h;
}

const params = (over: Partial<JobParams> = {}): JobParams => ({
  delayId: 'syd_1',
  delayTimeoutMs: 10_000,
  serverName: 'example.com',
  room: 'ROOM',
  identity: 'ID',
  ...over,
});

const actions = (h: Harness) => h.calls.map((c) => `${c.delayId}:${c.action}`);

describe('delayed-leave state machine', () => {
  it('aborts and sends when the connection is never established', async () => {
    const h = harness();
    await h.manager.add(params());
    await h.advance(9_900);
    expect(h.calls).toEqual([]);
    expect(h.manager.state('ROOM', 'ID')).toBe('waiting');
    await h.advance(200);
    expect(actions(h)).toEqual(['syd_1:send']);
    expect(h.manager.state('ROOM', 'ID')).toBeUndefined();
    expect(await h.store.all()).toEqual([]);
  });

  it('waits at most one hour for the initial connection', async () => {
    const h = harness();
    await h.manager.add(params({ delayTimeoutMs: 5 * 3_600_000 }));
    await h.advance(3_600_000 - 1000);
    expect(h.calls).toEqual([]);
    await h.advance(2000);
    expect(actions(h)).toEqual(['syd_1:send']);
  });

  it('connects via participant lookup when already present', async () => {
    const h = harness();
    h.present.add('ROOM|ID');
    await h.manager.add(params());
    await flush();
    expect(h.manager.state('ROOM', 'ID')).toBe('connected');
    expect(actions(h)).toEqual(['syd_1:restart']);
  });

  it('finds a participant that appears later by polling with backoff', async () => {
    const h = harness();
    await h.manager.add(params({ delayTimeoutMs: 60_000 }));
    await h.advance(3000);
    expect(h.manager.state('ROOM', 'ID')).toBe('waiting');
    h.present.add('ROOM|ID');
    await h.advance(5000);
    expect(h.manager.state('ROOM', 'ID')).toBe('connected');
  });

  it('aborts without sending when the connection is aborted before being established', async () => {
    const h = harness();
    await h.manager.add(params());
    h.manager.onSfuEvent('ROOM', 'ID', 'aborted', false);
    await h.advance(20_000);
    expect(h.calls).toEqual([]);
    expect(h.manager.state('ROOM', 'ID')).toBeUndefined();
  });

  it('ignores an intentional leave while still waiting', async () => {
    const h = harness();
    await h.manager.add(params());
    h.manager.onSfuEvent('ROOM', 'ID', 'left', true);
    await flush();
    expect(h.manager.state('ROOM', 'ID')).toBe('waiting');
  });

  it('aborts and sends when the connection is aborted after being established', async () => {
    const h = harness();
    await h.manager.add(params());
    h.manager.onSfuEvent('ROOM', 'ID', 'joined', false);
    await flush();
    h.manager.onSfuEvent('ROOM', 'ID', 'left', false);
    await flush();
    expect(actions(h)).toEqual(['syd_1:restart', 'syd_1:send']);
  });

  it('sends when the participant disconnects intentionally', async () => {
    const h = harness();
    await h.manager.add(params());
    h.manager.onSfuEvent('ROOM', 'ID', 'joined', false);
    await flush();
    h.manager.onSfuEvent('ROOM', 'ID', 'left', true);
    await flush();
    expect(actions(h)).toEqual(['syd_1:restart', 'syd_1:send']);
    expect(h.manager.size()).toBe(0);
  });

  it('sends when the participant goes missing undetected (sanity check)', async () => {
    const h = harness({ sanityMs: 5000 });
    h.present.add('ROOM|ID');
    await h.manager.add(params({ delayTimeoutMs: 60_000 }));
    await flush();
    expect(h.manager.state('ROOM', 'ID')).toBe('connected');
    h.present.delete('ROOM|ID');
    await h.advance(5100);
    expect(actions(h)).toEqual(['syd_1:restart', 'syd_1:send']);
  });

  it('restarts the delayed event repeatedly at 80 % of the timeout', async () => {
    const h = harness();
    const t0 = h.clock.now();
    await h.manager.add(params());
    h.manager.onSfuEvent('ROOM', 'ID', 'joined', false);
    await flush();
    await h.advance(25_000);
    const restarts = h.calls.filter((c) => c.action === 'restart').map((c) => c.at - t0);
    expect(restarts).toEqual([0, 8000, 16000, 24000]);
    const stored = await h.store.all();
    expect(stored[0]!.restartedAt - t0).toBe(24000);
  });

  it('aborts when the delayed event is gone (restart 404)', async () => {
    const h = harness();
    h.script.restart.push({ kind: 'not_found', status: 404 });
    await h.manager.add(params());
    h.manager.onSfuEvent('ROOM', 'ID', 'joined', false);
    await h.advance(30_000);
    expect(actions(h)).toEqual(['syd_1:restart']);
    expect(h.manager.size()).toBe(0);
  });

  it('aborts when the client-server API cannot be resolved for a restart', async () => {
    const h = harness();
    h.csResolvable = false;
    await h.manager.add(params());
    h.manager.onSfuEvent('ROOM', 'ID', 'joined', false);
    await flush();
    expect(h.manager.size()).toBe(0);
    expect(h.calls).toEqual([]);
  });

  it('completes when the delayed event was already sent (send 404)', async () => {
    const h = harness();
    h.script.send.push({ kind: 'not_found', status: 404 });
    await h.manager.add(params());
    h.manager.onSfuEvent('ROOM', 'ID', 'joined', false);
    await flush();
    h.manager.onSfuEvent('ROOM', 'ID', 'left', true);
    await h.advance(10_000);
    expect(actions(h)).toEqual(['syd_1:restart', 'syd_1:send']);
    expect(h.manager.size()).toBe(0);
  });

  it('retries a failed send with backoff and honours Retry-After on 429', async () => {
    const h = harness();
    h.script.send.push(
      { kind: 'retry', status: 500, reason: '500' },
      { kind: 'retry', status: 429, retryAfterMs: 3000, reason: 'rate limited' },
    );
    await h.manager.add(params());
    h.manager.onSfuEvent('ROOM', 'ID', 'joined', false);
    await flush();
    const tLeft = h.clock.now();
    h.manager.onSfuEvent('ROOM', 'ID', 'left', true);
    await flush();
    await h.advance(6000);
    const sends = h.calls.filter((c) => c.action === 'send').map((c) => c.at - tLeft);
    // 1st at once; 2nd after the 1 s backoff; 3rd after max(1.5 s, Retry-After 3 s).
    expect(sends).toEqual([0, 1000, 4000]);
    expect(h.manager.size()).toBe(0);
  });

  it('gives up sending at the restart deadline', async () => {
    const h = harness();
    for (let i = 0; i < 50; i++) h.script.send.push({ kind: 'retry', status: 500, reason: '500' });
    await h.manager.add(params({ delayTimeoutMs: 4000 }));
    h.manager.onSfuEvent('ROOM', 'ID', 'joined', false);
    await flush();
    h.manager.onSfuEvent('ROOM', 'ID', 'left', true);
    await h.advance(20_000);
    const sends = h.calls.filter((c) => c.action === 'send');
    expect(sends.length).toBeGreaterThan(1);
    expect(sends.at(-1)!.at - sends[0]!.at).toBeLessThanOrEqual(4000);
    expect(h.manager.size()).toBe(0);
  });

  it('replaces a job by a newer one for the same participant, and only the latest acts', async () => {
    const h = harness();
    await h.manager.add(params({ delayId: 'syd_old' }));
    await h.advance(2000);
    await h.manager.add(params({ delayId: 'syd_new' }));
    h.manager.onSfuEvent('ROOM', 'ID', 'joined', false);
    await flush();
    h.manager.onSfuEvent('ROOM', 'ID', 'left', true);
    await h.advance(20_000);
    expect(actions(h)).toEqual(['syd_new:restart', 'syd_new:send']);
  });

  it('keeps independent jobs apart', async () => {
    const h = harness();
    await h.manager.add(params({ delayId: 'syd_a', identity: 'A' }));
    await h.manager.add(params({ delayId: 'syd_b', identity: 'B' }));
    h.manager.onSfuEvent('ROOM', 'A', 'joined', false);
    await flush();
    h.manager.onSfuEvent('ROOM', 'A', 'left', true);
    await flush();
    expect(actions(h)).toEqual(['syd_a:restart', 'syd_a:send']);
    expect(h.manager.state('ROOM', 'B')).toBe('waiting');
  });

  it('asserts the appservice user on restart and send for proxied jobs', async () => {
    const h = harness();
    await h.manager.add(params({ asUserId: '@alice:example.com' }));
    h.manager.onSfuEvent('ROOM', 'ID', 'joined', false);
    await flush();
    h.manager.onSfuEvent('ROOM', 'ID', 'left', true);
    await flush();
    expect(h.calls.map((c) => c.user)).toEqual(['@alice:example.com', '@alice:example.com']);
  });

  it('resumes stored jobs after a restart and purges expired ones', async () => {
    const clock = createManualClock();
    const store = createMemoryJobStore();
    const first = harness({ clock, store });
    await first.manager.add(params({ identity: 'LIVE', delayTimeoutMs: 60_000 }));
    await first.manager.add(params({ identity: 'OLD', delayTimeoutMs: 5_000 }));
    await first.manager.close();
    clock.advance(10_000);
    const second = harness({ clock, store });
    await second.manager.restore();
    expect(second.manager.state('ROOM', 'LIVE')).toBe('waiting');
    expect(second.manager.state('ROOM', 'OLD')).toBeUndefined();
    expect((await store.all()).map((j) => j.params.identity)).toEqual(['LIVE']);
    second.manager.onSfuEvent('ROOM', 'LIVE', 'joined', false);
    await flush();
    expect(actions(second)).toEqual(['syd_1:restart']);
  });

  it('refuses new jobs once closed', async () => {
    const h = harness();
    await h.manager.close();
    await expect(h.manager.add(params())).rejects.toThrow(/shutting down/);
  });
});

const forms = (h: Harness) => h.calls.map((c) => `${c.action}:${c.form}:${c.user ?? '-'}`);

describe('delayed-leave actions on a homeserver without the path form (Synapse 1.132)', () => {
  it('falls back to the {action} form as the local owner after a 404 M_UNRECOGNIZED, and then goes straight to it', async () => {
    const h = harness({ serves: 'body' });
    await h.manager.add(params({ userId: '@alice:example.com' }));
    h.manager.onSfuEvent('ROOM', 'ID', 'joined', false);
    await h.advance(9_000);
    expect(h.manager.state('ROOM', 'ID')).toBe('connected');
    h.manager.onSfuEvent('ROOM', 'ID', 'left', true);
    await flush();
    expect(forms(h)).toEqual(['restart:path:-', 'restart:body:@alice:example.com', 'restart:body:@alice:example.com', 'send:body:@alice:example.com']);
    expect(h.manager.size()).toBe(0);
    expect(h.warnings).toEqual([]);
  });

  it('remembers the form per homeserver: another server is asked in the path form first', async () => {
    const h = harness({ serves: 'body' });
    await h.manager.add(params({ identity: 'A', delayId: 'syd_a', userId: '@alice:example.com' }));
    h.manager.onSfuEvent('ROOM', 'A', 'joined', false);
    await flush();
    await h.manager.add(params({ identity: 'B', delayId: 'syd_b', userId: '@bob:example.com' }));
    await h.manager.add(params({ identity: 'C', delayId: 'syd_c', serverName: 'other.org', userId: '@carol:other.org' }));
    h.manager.onSfuEvent('ROOM', 'B', 'joined', false);
    h.manager.onSfuEvent('ROOM', 'C', 'joined', false);
    await flush();
    const byId = (id: string) => h.calls.filter((c) => c.delayId === id).map((c) => `${c.form}@${c.cs}`);
    expect(byId('syd_a')).toEqual(['path@http://example.com.invalid', 'body@http://example.com.invalid']);
    expect(byId('syd_b')).toEqual(['body@http://example.com.invalid']);
    // carol is not a user of the appservice's homeserver: no credential, ends as on a restart 404.
    expect(byId('syd_c')).toEqual(['path@http://other.org.invalid']);
    expect(h.manager.state('ROOM', 'C')).toBeUndefined();
    expect(h.manager.state('ROOM', 'B')).toBe('connected');
  });

  it('without an appservice logs once per job and ends as on a 404 (restart: aborted, nothing sent)', async () => {
    const h = harness({ serves: 'body', asToken: null });
    await h.manager.add(params({ userId: '@alice:example.com' }));
    h.manager.onSfuEvent('ROOM', 'ID', 'joined', false);
    await h.advance(30_000);
    expect(forms(h)).toEqual(['restart:path:-']);
    expect(h.manager.size()).toBe(0);
    expect(h.warnings.map((w) => w.msg)).toEqual([expect.stringMatching(/without an appservice registration/)]);
  });

  it('without an appservice a send goes nowhere once and the job completes', async () => {
    const h = harness({ serves: 'body', asToken: null });
    await h.manager.add(params({ userId: '@alice:example.com' }));
    await h.advance(10_100);
    expect(forms(h)).toEqual(['send:path:-']);
    expect(h.manager.size()).toBe(0);
    expect(h.warnings).toHaveLength(1);
  });

  it('keeps 404 M_NOT_FOUND semantics in the {action} form: restart aborts', async () => {
    const h = harness({ serves: 'body' });
    h.script.restart.push({ kind: 'not_found', status: 404 });
    await h.manager.add(params({ userId: '@alice:example.com' }));
    h.manager.onSfuEvent('ROOM', 'ID', 'joined', false);
    await h.advance(30_000);
    expect(forms(h)).toEqual(['restart:path:-', 'restart:body:@alice:example.com']);
    expect(h.manager.size()).toBe(0);
  });

  it('keeps 404 M_NOT_FOUND semantics in the {action} form: send is done', async () => {
    const h = harness({ serves: 'body' });
    h.script.send.push({ kind: 'not_found', status: 404 });
    await h.manager.add(params({ userId: '@alice:example.com' }));
    h.manager.onSfuEvent('ROOM', 'ID', 'joined', false);
    await flush();
    h.manager.onSfuEvent('ROOM', 'ID', 'left', true);
    await h.advance(10_000);
    expect(forms(h)).toEqual(['restart:path:-', 'restart:body:@alice:example.com', 'send:body:@alice:example.com']);
    expect(h.manager.size()).toBe(0);
  });

  it('retries the {action} form like the path form (429 Retry-After) and proxied jobs use their asserted user', async () => {
    const h = harness({ serves: 'body' });
    h.script.restart.push({ kind: 'retry', status: 429, retryAfterMs: 2000, reason: 'rate limited' });
    await h.manager.add(params({ asUserId: '@alice:example.com' }));
    const t0 = h.clock.now();
    h.manager.onSfuEvent('ROOM', 'ID', 'joined', false);
    await flush();
    await h.advance(2_500);
    expect(h.calls.map((c) => `${c.form}:${c.user}:${c.at - t0}`)).toEqual(['path:@alice:example.com:0', 'body:@alice:example.com:0', 'body:@alice:example.com:2000']);
    expect(h.manager.state('ROOM', 'ID')).toBe('connected');
  });
});

describe('delay timeout bound', () => {
  it('refuses a delay timeout above 24 h instead of arming a timer that overflows', async () => {
    const h = harness();
    await expect(h.manager.add(params({ delayTimeoutMs: 3e9 }))).rejects.toThrow(JobRejectedError);
    await expect(h.manager.add(params({ delayTimeoutMs: MAX_DELAY_TIMEOUT_MS + 1 }))).rejects.toThrow(/at most 86400000 \(24 h\)/);
    expect(h.manager.size()).toBe(0);
    expect(await h.store.all()).toEqual([]);
    h.manager.onSfuEvent('ROOM', 'ID', 'joined', false);
    await h.advance(1000);
    expect(h.calls).toEqual([]);
    await h.manager.add(params({ delayTimeoutMs: MAX_DELAY_TIMEOUT_MS }));
    expect(h.manager.state('ROOM', 'ID')).toBe('waiting');
  });

  it('purges a stored job with an out-of-range timeout (e.g. written by lk-jwt-service) instead of running it', async () => {
    const clock = createManualClock();
    const store = createMemoryJobStore(clock);
    await store.save({ params: params({ identity: 'HUGE', delayTimeoutMs: 3e9 }), restartedAt: clock.now() });
    await store.save({ params: params({ identity: 'OK' }), restartedAt: clock.now() });
    const h = harness({ clock, store });
    await h.manager.restore();
    expect(h.manager.state('ROOM', 'HUGE')).toBeUndefined();
    expect(h.manager.state('ROOM', 'OK')).toBe('waiting');
    expect((await store.all()).map((j) => j.params.identity)).toEqual(['OK']);
  });
});

describe('watching the SFU (sanity poll)', () => {
  it('asks the SFU once per room per interval, not once per job', async () => {
    const h = harness({ sanityMs: 2000 });
    for (const id of ['A', 'B', 'C']) h.present.add(`ROOM|${id}`);
    h.present.add('OTHER|D');
    for (const id of ['A', 'B', 'C']) await h.manager.add(params({ delayId: `syd_${id}`, identity: id, delayTimeoutMs: 60_000 }));
    await h.manager.add(params({ delayId: 'syd_D', room: 'OTHER', identity: 'D', delayTimeoutMs: 60_000 }));
    await flush();
    h.listCalls.length = 0;
    await h.advance(6000);
    expect(h.listCalls.toSorted()).toEqual(['OTHER', 'OTHER', 'OTHER', 'ROOM', 'ROOM', 'ROOM']);
    h.present.delete('ROOM|B');
    await h.advance(2000);
    expect(actions(h).filter((a) => a.endsWith(':send'))).toEqual(['syd_B:send']);
  });

  it('warns once that no webhook arrives when only polling sees participants, naming webhook.urls', async () => {
    const h = harness({ sanityMs: 1000 });
    h.present.add('ROOM|A');
    h.present.add('ROOM|B');
    await h.manager.add(params({ delayId: 'syd_A', identity: 'A', delayTimeoutMs: 60_000 }));
    await h.manager.add(params({ delayId: 'syd_B', identity: 'B', delayTimeoutMs: 60_000 }));
    await h.advance(2000);
    expect(h.warnings).toEqual([]);
    await h.advance(5000);
    const warned = h.warnings.filter((w) => /webhook\.urls/.test(w.msg) && /\/sfu_webhook/.test(w.msg));
    expect(warned).toHaveLength(1);
    h.present.delete('ROOM|A');
    h.present.delete('ROOM|B');
    await h.advance(2000);
    expect(h.warnings.filter((w) => /webhook\.urls/.test(w.msg))).toHaveLength(1);
  });

  it('warns too with the poll off, once a participant found by the look-up has had no webhook for a while', async () => {
    const h = harness({ sanityMs: 0 });
    h.present.add('ROOM|ID');
    await h.manager.add(params({ delayTimeoutMs: 60_000 }));
    await h.advance(4000);
    expect(h.manager.state('ROOM', 'ID')).toBe('connected');
    expect(h.warnings).toEqual([]);
    await h.advance(1500);
    expect(h.warnings.filter((w) => /webhook\.urls/.test(w.msg))).toHaveLength(1);
  });

  it('does not warn when the participant_joined webhook follows the look-up', async () => {
    const h = harness({ sanityMs: 1000 });
    h.present.add('ROOM|ID');
    await h.manager.add(params({ delayTimeoutMs: 60_000 }));
    await h.advance(1000);
    h.manager.onSfuEvent('ROOM', 'ID', 'joined', false);
    await h.advance(10_000);
    expect(h.warnings).toEqual([]);
  });

  it('does not warn when the webhook works', async () => {
    const h = harness({ sanityMs: 1000 });
    await h.manager.add(params({ delayTimeoutMs: 60_000 }));
    h.present.add('ROOM|ID');
    h.manager.onSfuEvent('ROOM', 'ID', 'joined', false);
    await h.advance(10_000);
    h.present.delete('ROOM|ID');
    await h.advance(2000);
    expect(actions(h)).toEqual(['syd_1:restart', 'syd_1:send']);
    expect(h.warnings).toEqual([]);
  });
});

const restarts = (...hs: Harness[]) => hs.flatMap((x) => x.calls).filter((c) => c.action === 'restart').length;

describe('store outages', () => {
  it('logs a failing round once, not every round, and recovers', async () => {
    const clock = createManualClock();
    const shared = createMemoryJobStore(clock);
    let down = false;
    const store: DelayedLeaveJobStore = { ...shared, all: () => (down ? Promise.reject(new Error('connection lost')) : shared.all()) };
    const h = harness({ clock, store, leaseMs: 3000 });
    await h.manager.restore();
    down = true;
    await h.advance(10_000);
    expect(h.warnings.filter((w) => /round failed/.test(w.msg))).toHaveLength(1);
    down = false;
    await shared.save({ params: params({ identity: 'LATE' }), restartedAt: clock.now() });
    await h.advance(1000);
    expect(h.manager.state('ROOM', 'LATE')).toBe('waiting');
  });
});

describe('several replicas on one store', () => {
  it('runs a job in exactly one replica, forwards an event the other receives, and hands over on close', async () => {
    const clock = createManualClock();
    const store = createMemoryJobStore(clock);
    const a = harness({ clock, store, replicaId: 'A', leaseMs: 3000 });
    const b = harness({ clock, store, replicaId: 'B', leaseMs: 3000 });
    await a.manager.restore();
    await b.manager.restore();
    await a.manager.add(params({ delayTimeoutMs: 20_000 }));
    await a.advance(3000);
    expect(a.manager.state('ROOM', 'ID')).toBe('waiting');
    expect(b.manager.state('ROOM', 'ID')).toBeUndefined();
    // The SFU's webhook reaches B: A (the owner) acts on it.
    b.manager.onSfuEvent('ROOM', 'ID', 'joined', false);
    await a.advance(17_000);
    expect(a.manager.state('ROOM', 'ID')).toBe('connected');
    expect(b.manager.state('ROOM', 'ID')).toBeUndefined();
    // At connect and 16 s later, from A only (B's rounds saw A's lease each time).
    expect(restarts(a)).toBe(2);
    expect(restarts(b)).toBe(0);
    b.present.add('ROOM|ID');
    await a.manager.close();
    await b.advance(1100);
    expect(b.manager.state('ROOM', 'ID')).toBe('connected');
    expect(restarts(b)).toBe(1);
    b.manager.onSfuEvent('ROOM', 'ID', 'left', true);
    await b.advance(100);
    expect(actions(b).at(-1)).toBe('syd_1:send');
    expect(await store.all()).toEqual([]);
  });

  it('takes over a dead replica`s jobs once its lease runs out, and the dead one stops acting', async () => {
    const clock = createManualClock();
    const shared = createMemoryJobStore(clock);
    let aDead = false;
    const cut = <T>(fn: () => Promise<T>): Promise<T> => (aDead ? Promise.reject(new Error('connection lost')) : fn());
    const aStore: DelayedLeaveJobStore = {
      save: (j) => cut(() => shared.save(j)),
      delete: (r, i) => cut(() => shared.delete(r, i)),
      all: () => cut(() => shared.all()),
      get: (r, i) => cut(() => shared.get(r, i)),
      claim: (r, i, o, t, f) => cut(() => shared.claim(r, i, o, t, f)),
      release: (r, i, o) => cut(() => shared.release(r, i, o)),
      publish: (m) => cut(() => shared.publish(m)),
      subscribe: (l) => shared.subscribe((m) => !aDead && l(m)),
      close: async () => {},
    };
    const a = harness({ clock, store: aStore, replicaId: 'A', leaseMs: 3000 });
    const b = harness({ clock, store: shared, replicaId: 'B', leaseMs: 3000 });
    await a.manager.restore();
    await b.manager.restore();
    a.present.add('ROOM|ID');
    b.present.add('ROOM|ID');
    await a.manager.add(params({ delayTimeoutMs: 60_000 }));
    await a.advance(2000);
    expect(a.manager.state('ROOM', 'ID')).toBe('connected');
    aDead = true;
    await a.advance(2500);
    expect(b.manager.state('ROOM', 'ID')).toBeUndefined();
    await a.advance(2000);
    // Within lease + one renewal round (3 s + 1 s) of A's last renewal.
    expect(b.manager.state('ROOM', 'ID')).toBe('connected');
    expect(a.manager.state('ROOM', 'ID')).toBeUndefined();
    expect(restarts(b)).toBe(1);
  });

  it('a newer request on another replica replaces the job there', async () => {
    const clock = createManualClock();
    const store = createMemoryJobStore(clock);
    const a = harness({ clock, store, replicaId: 'A', leaseMs: 3000 });
    const b = harness({ clock, store, replicaId: 'B', leaseMs: 3000 });
    await a.manager.add(params({ delayId: 'syd_old', delayTimeoutMs: 60_000 }));
    await b.manager.add(params({ delayId: 'syd_new', delayTimeoutMs: 60_000 }));
    await flush();
    expect(a.manager.state('ROOM', 'ID')).toBeUndefined();
    b.manager.onSfuEvent('ROOM', 'ID', 'joined', false);
    await b.advance(5000);
    expect(actions(a)).toEqual([]);
    expect(actions(b)).toEqual(['syd_new:restart']);
  });
});

describe('stop (the membership monitor removed the participant)', () => {
  it('ends a job run here without sending its leave', async () => {
    const h = harness();
    h.present.add('ROOM|ID');
    await h.manager.add(params({ delayTimeoutMs: 20_000 }));
    await h.advance(100);
    expect(h.manager.state('ROOM', 'ID')).toBe('connected');
    await h.manager.stop('ROOM', 'ID');
    h.manager.onSfuEvent('ROOM', 'ID', 'left', false);
    await h.advance(30_000);
    expect(actions(h)).toEqual(['syd_1:restart']);
    expect(h.manager.state('ROOM', 'ID')).toBeUndefined();
    expect(await h.store.all()).toEqual([]);
  });

  it('ends a job another replica runs: the owner drops it at its next renewal, nobody adopts or sends it', async () => {
    const clock = createManualClock();
    const store = createMemoryJobStore(clock);
    const a = harness({ clock, store, replicaId: 'A', leaseMs: 3000 });
    const b = harness({ clock, store, replicaId: 'B', leaseMs: 3000 });
    await a.manager.restore();
    await b.manager.restore();
    a.present.add('ROOM|ID');
    await a.manager.add(params({ delayTimeoutMs: 20_000 }));
    await a.advance(100);
    expect(a.manager.state('ROOM', 'ID')).toBe('connected');
    await b.manager.stop('ROOM', 'ID');
    await a.advance(1100);
    expect(a.manager.state('ROOM', 'ID')).toBeUndefined();
    b.manager.onSfuEvent('ROOM', 'ID', 'left', false);
    await a.advance(30_000);
    expect([...actions(a), ...actions(b)]).toEqual(['syd_1:restart']);
    expect(await store.all()).toEqual([]);
  });
});
