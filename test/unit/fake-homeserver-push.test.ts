/**
 * The fake homeserver's appservice pushes compared with Synapse 1.132's recorded traffic
 * (fixtures/synapse-1.132/transactions): request line and header order, compact sorted JSON,
 * event keys, prev_content rules, identical re-sends, kicks, MSC3757 ownership, redactions,
 * batching, retry/backoff, DOWN mode with ping flush, and restarts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createManualClock, type ManualClock } from '../../common/clock.ts';
import { loadClient, loadTransactions } from '../fake-homeserver/fixtures.ts';
import { startRecordingAppservice, type RecordingAppservice } from '../fake-homeserver/recording-appservice.ts';
import { startFakeHomeserver, testRegistration, type FakeHomeserver } from '../fake-homeserver/server.ts';
import { waitFor } from '../support/wait.ts';

const CALL = 'org.matrix.msc3401.call.member';
let hs: FakeHomeserver | undefined;
let as: RecordingAppservice | undefined;
afterEach(async () => {
  await hs?.stop();
  await as?.stop();
  hs = as = undefined;
});

/** alice's join content exactly as the client sent it in flow 02 (client key order). */
function aliceJoinContent(roomId: string): Record<string, unknown> {
  const put = loadClient('02-alice-joins-call').find((c) => c.request.method === 'PUT')!;
  const c = structuredClone(put.request.body) as Record<string, unknown>;
  (c.foci_preferred as Record<string, unknown>[])[0]!.livekit_alias = roomId;
  return c;
}

async function setup(opts: { clock?: ManualClock; version?: string } = {}) {
  as = await startRecordingAppservice();
  hs = await startFakeHomeserver({ registration: testRegistration(as.url), clock: opts.clock, backoffBaseMs: 1000 });
  const carol = hs.model.registerUser('carol', { admin: true }).userId;
  const alice = hs.model.registerUser('alice').userId;
  const bob = hs.model.registerUser('bob').userId;
  const roomId = hs.model.createRoom(carol, {
    version: opts.version ?? '10',
    invite: [alice, bob],
    name: 'rtc-fixtures',
    power_level_content_override: { events: { [CALL]: 0 } },
  });
  hs.model.setMembership(alice, roomId, alice, 'join');
  hs.model.setMembership(bob, roomId, bob, 'join');
  const created = hs.model.rooms.size;
  await waitFor('setup pushed', () => hs!.pusher.pendingCount() === 0 && as!.transactions().length > 0);
  await waitFor('setup drained', async () => {
    const n = as!.transactions().length;
    await new Promise((r) => setImmediate(r));
    return hs!.pusher.pendingCount() === 0 && as!.transactions().length === n;
  });
  return { carol, alice, bob, roomId, created };
}

const sortedKeys = (o: object) => Object.keys(o).toSorted();
const strip = (s: string) => s.replace(/"age":\d+/g, '"age":0');

describe('fake homeserver pushes like Synapse 1.132', () => {
  it('sends a call join with Synapse headers in order and compact sorted JSON, like transactions/02', async () => {
    const { alice, roomId } = await setup();
    const before = as!.transactions().length;
    hs!.model.sendState(alice, roomId, CALL, `_${alice}_DEVICEA_m.call`, aliceJoinContent(roomId));
    await waitFor('push', () => as!.transactions().length > before);
    const got = as!.transactions()[before]!;
    const rec = loadTransactions('02-alice-joins-call')[0]!;
    expect(got.method).toBe('PUT');
    expect(got.path).toMatch(/^\/_matrix\/app\/v1\/transactions\/\d+$/);
    const names = got.rawHeaders.filter((_, i) => i % 2 === 0);
    expect(names).toEqual(Object.keys(rec.headers));
    const value = (n: string) => got.rawHeaders[got.rawHeaders.indexOf(n) + 1];
    expect(value('User-Agent')).toBe('Synapse/1.132.0');
    expect(value('Authorization')).toBe(`Bearer ${hs!.registration.hs_token}`);
    expect(value('Content-Length')).toBe(String(Buffer.byteLength(got.rawBody)));
    // Compact, keys sorted at every level (content included) although the client sent another order.
    expect(got.rawBody).toBe(JSON.stringify(got.body));
    const ev = (got.body as { events: Record<string, unknown>[] }).events[0]!;
    const recEv = rec.body.events[0]!;
    expect(Object.keys(ev)).toEqual(Object.keys(recEv));
    expect(Object.keys(ev.content as object)).toEqual(Object.keys(recEv.content as object));
    expect(sortedKeys(ev.unsigned as object)).toEqual(sortedKeys(recEv.unsigned as object));
    expect(Object.keys(got.body as object)).toEqual(['events']);
    expect(ev.user_id).toBe(ev.sender);
  });

  it('numbers transactions 1, 2, 3… from a fresh start', async () => {
    await setup();
    const ids = as!.transactions().map((t) => Number(t.path.split('/').pop()));
    expect(ids).toEqual(ids.map((_, i) => i + 1));
  });

  it('puts prev_content/prev_sender/replaces_state in unsigned and prev_content/replaces_state at the top (transactions/03)', async () => {
    const { alice, roomId } = await setup();
    const key = `_${alice}_DEVICEA_m.call`;
    hs!.model.sendState(alice, roomId, CALL, key, aliceJoinContent(roomId));
    hs!.model.sendState(alice, roomId, CALL, key, {});
    const before = as!.transactions().length;
    await waitFor('leave pushed', () => as!.transactions().some((t) => JSON.stringify(t.body).includes('"content":{}')));
    const leave = as!.transactions().slice(before - 1).flatMap((t) => (t.body as { events: Record<string, unknown>[] }).events).find((e) => Object.keys(e.content as object).length === 0)!;
    const rec = loadTransactions('03-alice-updates-then-leaves')[1]!.body.events[0]!;
    expect(Object.keys(leave)).toEqual(Object.keys(rec));
    expect(sortedKeys(leave.unsigned as object)).toEqual(sortedKeys(rec.unsigned as object));
    expect(leave).not.toHaveProperty('prev_sender');
    expect((leave.unsigned as Record<string, unknown>).prev_sender).toBe(alice);
    expect(Object.keys(leave.prev_content as object).length).toBeGreaterThan(0);
  });

  it('answers an identical re-send with the existing event id and pushes nothing (02b)', async () => {
    const { alice, roomId } = await setup();
    const key = `_${alice}_DEVICEA_m.call`;
    const first = hs!.model.sendState(alice, roomId, CALL, key, aliceJoinContent(roomId));
    await waitFor('push', () => hs!.pusher.pendingCount() === 0);
    const n = as!.transactions().length;
    const again = hs!.model.sendState(alice, roomId, CALL, key, aliceJoinContent(roomId));
    expect(again).toBe(first);
    expect(loadTransactions('02b-identical-state-resend')).toEqual([]);
    expect(hs!.pusher.pendingCount()).toBe(0);
    expect(as!.transactions().length).toBe(n);
  });

  it('leaves the call membership of a kicked user untouched (04)', async () => {
    const { carol, bob, roomId } = await setup();
    const key = `_${bob}_DEVICEB_m.call`;
    hs!.model.sendState(bob, roomId, CALL, key, { ...aliceJoinContent(roomId), device_id: 'DEVICEB', membershipID: `${bob}:DEVICEB` });
    hs!.model.setMembership(carol, roomId, bob, 'leave', 'fixtures: kick');
    await waitFor('kick pushed', () => JSON.stringify(as!.transactions().at(-1)?.body ?? '').includes('fixtures: kick'));
    const last = (as!.transactions().at(-1)!.body as { events: Record<string, unknown>[] }).events.at(-1)!;
    expect(last.type).toBe('m.room.member');
    expect(last.content).toEqual({ membership: 'leave', reason: 'fixtures: kick' });
    expect(hs!.model.stateEvent(roomId, CALL, key)!.content.device_id).toBe('DEVICEB');
  });

  it('lets anyone with the power level write another user`s _@ key in v10 (05), with prev_sender naming the victim', async () => {
    const { alice, bob, roomId } = await setup();
    const key = `_${alice}_DEVICEA_m.call`;
    hs!.model.sendState(alice, roomId, CALL, key, aliceJoinContent(roomId));
    hs!.model.sendState(bob, roomId, CALL, key, {});
    await waitFor('forged pushed', () => as!.transactions().some((t) => (t.body as { events: { sender: string; state_key?: string }[] }).events.some((e) => e.sender === bob && e.state_key === key)));
    const rec = loadTransactions('05-forged-leave-v10').flatMap((t) => t.body.events).find((e) => e.type === CALL && Object.keys(e.content as object).length === 0)!;
    expect((rec.unsigned as Record<string, unknown>).prev_sender).toBe('@alice:localhost');
    expect(rec.sender).toBe('@bob:localhost');
  });

  it('enforces MSC3757 ownership in org.matrix.msc3757.11 (06): 403 for bob, allowed for carol with a higher power level', async () => {
    const { alice, bob, carol, roomId } = await setup({ version: 'org.matrix.msc3757.11' });
    const key = `${alice}_DEVICEA_m.call`;
    hs!.model.sendState(alice, roomId, CALL, key, aliceJoinContent(roomId));
    const rec = loadClient('06-msc3757-room').filter((c) => c.status === 403);
    expect(rec.length).toBe(2);
    for (const content of [{}, aliceJoinContent(roomId)]) {
      expect(() => hs!.model.sendState(bob, roomId, CALL, key, content)).toThrow(expect.objectContaining({ status: 403, errcode: 'M_FORBIDDEN', message: (rec[0]!.body as { error: string }).error }));
    }
    expect(hs!.model.sendState(bob, roomId, CALL, `${bob}_DEVICEB_m.call`, { ...aliceJoinContent(roomId), device_id: 'DEVICEB' })).toMatch(/^\$/);
    expect(hs!.model.sendState(carol, roomId, CALL, key, {})).toMatch(/^\$/);
    expect(hs!.model.stateEvent(roomId, 'm.room.create', '')!.content).toEqual({ room_version: 'org.matrix.msc3757.11' });
  });

  it('pushes redactions with redacts at the top and in content, then the next state has prev_content {} (08, 09a)', async () => {
    const { alice, roomId } = await setup();
    const key = `_${alice}_DEVICEA_m.call`;
    const id = hs!.model.sendState(alice, roomId, CALL, key, aliceJoinContent(roomId));
    hs!.model.redact(alice, roomId, id, 'fixtures: redact call.member');
    hs!.model.sendState(alice, roomId, CALL, key, aliceJoinContent(roomId));
    await waitFor('all pushed', () => hs!.pusher.pendingCount() === 0 && as!.transactions().some((t) => JSON.stringify(t.body).includes('"prev_content":{}')));
    const events = as!.transactions().flatMap((t) => (t.body as { events: Record<string, unknown>[] }).events);
    const red = events.find((e) => e.type === 'm.room.redaction')!;
    const rec = loadTransactions('08-redaction')[1]!.body.events[0]!;
    expect(Object.keys(red)).toEqual(Object.keys(rec));
    expect(red.redacts).toBe(id);
    expect(red.content).toEqual({ reason: 'fixtures: redact call.member', redacts: id });
    expect(hs!.model.stateEvent(roomId, CALL, key)!.content).not.toEqual({});
    expect(events.at(-1)!.prev_content).toEqual({});
  });

  it('batches events persisted while a transaction is in flight into one transaction (10a)', async () => {
    const { alice, bob, roomId } = await setup();
    let release!: () => void;
    as!.script({ status: 200, hold: new Promise<void>((r) => (release = r)) });
    hs!.model.sendEvent(alice, roomId, 'm.room.message', { body: 'held', msgtype: 'm.text' });
    await waitFor('held txn arrived', () => as!.transactions().some((t) => JSON.stringify(t.body).includes('held')));
    hs!.model.sendEvent(bob, roomId, 'm.room.message', { body: 'one', msgtype: 'm.text' });
    hs!.model.sendEvent(alice, roomId, 'm.room.message', { body: 'two', msgtype: 'm.text' });
    hs!.model.sendEvent(bob, roomId, 'm.room.message', { body: 'three', msgtype: 'm.text' });
    const n = as!.transactions().length;
    release();
    await waitFor('batch', () => as!.transactions().length > n);
    expect((as!.transactions()[n]!.body as { events: unknown[] }).events).toHaveLength(3);
    expect(loadTransactions('10a-batching-slow-appservice').some((t) => t.body.events.length === 4)).toBe(true);
  });
});

describe('fake homeserver retries like Synapse 1.132', () => {
  it('retries the same txnId after a 500, a 503 and a 2xx without JSON, backing off 2 s, 4 s, 8 s (09a-c)', async () => {
    const clock = createManualClock(Date.now());
    const { alice, roomId } = await setup({ clock });
    as!.script({ status: 500, body: '{}' }, { status: 503, body: '{}' }, { status: 200, body: '', contentType: 'text/plain' });
    hs!.model.sendEvent(alice, roomId, 'm.room.message', { body: 'retry me', msgtype: 'm.text' });
    const attempts = () => as!.transactions().filter((t) => t.rawBody.includes('retry me'));
    await waitFor('first attempt', () => attempts().length === 1 && hs!.pusher.isDown());
    for (const [i, step] of [2000, 4000, 8000].entries()) {
      clock.advance(step - 1);
      expect(attempts()).toHaveLength(i + 1);
      clock.advance(1);
      await waitFor(`attempt ${i + 2}`, () => attempts().length === i + 2);
    }
    await waitFor('up again', () => !hs!.pusher.isDown());
    const paths = new Set(attempts().map((a) => a.path));
    expect(paths.size).toBe(1);
    // Only age differs between attempts (README rule 7).
    expect(new Set(attempts().map((a) => strip(a.rawBody))).size).toBe(1);
    const rec = loadTransactions('09b-retry-backoff');
    expect(rec.map((r) => r._meta.response_status)).toEqual([500, 503, 500, 200]);
    expect(new Set(rec.map((r) => r.path)).size).toBe(1);
  });

  it('stores each event as its own transaction while DOWN and flushes them on a ping (10b, 10c)', async () => {
    const clock = createManualClock(Date.now());
    const { alice, roomId } = await setup({ clock });
    await as!.stop();
    hs!.model.sendEvent(alice, roomId, 'm.room.message', { body: 'down-1', msgtype: 'm.text' });
    await waitFor('down', () => hs!.pusher.isDown());
    hs!.model.sendEvent(alice, roomId, 'm.room.message', { body: 'down-2', msgtype: 'm.text' });
    hs!.model.sendEvent(alice, roomId, 'm.room.message', { body: 'down-3', msgtype: 'm.text' });
    const down = await hs!.pusher.ping('while-down');
    expect(down).toEqual({ status: 502, body: { errcode: 'M_CONNECTION_FAILED', error: 'ConnectionRefusedError: Connection was refused by other side: 111: Connection refused.' } });
    await as!.restart();
    const before = as!.received.length;
    const up = await hs!.pusher.ping('flush');
    expect(up.status).toBe(200);
    await waitFor('flushed', () => !hs!.pusher.isDown() && hs!.pusher.pendingCount() === 0);
    const after = as!.received.slice(before);
    expect(after[0]!.path).toBe('/_matrix/app/v1/ping');
    expect(after[0]!.rawBody).toBe('{"transaction_id":"flush"}');
    const txns = after.filter((r) => r.path.includes('/transactions/'));
    expect(txns.map((t) => (t.body as { events: unknown[] }).events.length)).toEqual([1, 1, 1]);
    const ids = txns.map((t) => Number(t.path.split('/').pop()));
    expect(ids).toEqual([ids[0], ids[0]! + 1, ids[0]! + 2]);
  });

  it('restarts txn ids at 1 after a restart, waits for a new event, and rebuilds retries without prev_content (11)', async () => {
    const clock = createManualClock(Date.now());
    const { alice, roomId } = await setup({ clock });
    const key = `_${alice}_DEVICEA_m.call`;
    hs!.model.sendState(alice, roomId, CALL, key, aliceJoinContent(roomId));
    await waitFor('joined pushed', () => hs!.pusher.pendingCount() === 0);
    await as!.stop();
    hs!.model.sendState(alice, roomId, CALL, key, {});
    await waitFor('down', () => hs!.pusher.isDown());
    hs!.restart();
    await as!.restart();
    const before = as!.transactions().length;
    clock.advance(600_000);
    expect(as!.transactions().length).toBe(before);
    hs!.model.sendEvent(alice, roomId, 'm.room.message', { body: 'wake', msgtype: 'm.text' });
    clock.advance(2000);
    await waitFor('recovered', () => hs!.pusher.pendingCount() === 0 && !hs!.pusher.isDown());
    const txns = as!.transactions().slice(before);
    const leave = (txns[0]!.body as { events: Record<string, unknown>[] }).events[0]!;
    expect(leave.content).toEqual({});
    expect(leave).not.toHaveProperty('prev_content');
    expect(sortedKeys(leave.unsigned as object)).toEqual(['age', 'replaces_state']);
    const rec = loadTransactions('11-txn-ids-across-restarts').flatMap((t) => t.body.events ?? []).find((e) => e.type === CALL && Object.keys(e.content as object).length === 0 && !('prev_content' in e));
    expect(rec && sortedKeys(rec.unsigned as object)).toEqual(['age', 'replaces_state']);
    // A fresh homeserver numbering: the pending txn kept its id and the next one follows it.
    const ids = txns.map((t) => Number(t.path.split('/').pop()));
    expect(ids[1]).toBe(ids[0]! + 1);
  });
});
