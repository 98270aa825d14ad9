/**
 * The fake homeserver's appservice scheduler rules beyond the recorded pushes: the user query
 * before an event about an unknown namespaced user (synapse/handlers/appservice.py), ephemeral
 * and to-device keys only when registered and never on retries, ephemeral-only data dropped
 * while DOWN (synapse/appservice/api.py, scheduler.py, storage/.../appservice.py), Synapse's
 * backoff counter reset, and the timing after a restart (transactions/11).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createManualClock, type ManualClock } from '../../common/clock.ts';
import type { AppserviceRegistration } from '../fake-homeserver/appservice-pusher.ts';
import { loadClient, loadTransactions } from '../fake-homeserver/fixtures.ts';
import { startRecordingAppservice, type ReceivedRequest, type RecordingAppservice } from '../fake-homeserver/recording-appservice.ts';
import { startFakeHomeserver, testRegistration, type FakeHomeserver } from '../fake-homeserver/server.ts';
import { waitFor } from '../support/wait.ts';

let hs: FakeHomeserver | undefined;
let as: RecordingAppservice | undefined;
afterEach(async () => {
  await hs?.stop();
  await as?.stop();
  hs = as = undefined;
});

async function setup(opts: { clock?: ManualClock; flags?: Partial<AppserviceRegistration>; toDevice?: boolean } = {}) {
  as = await startRecordingAppservice();
  hs = await startFakeHomeserver({ registration: { ...testRegistration(as.url), ...opts.flags }, clock: opts.clock, msc2409ToDevice: opts.toDevice });
  const carol = hs.model.registerUser('carol', { admin: true });
  const alice = hs.model.registerUser('alice');
  const roomId = hs.model.createRoom(carol.userId, { invite: [alice.userId] });
  hs.model.setMembership(alice.userId, roomId, alice.userId, 'join');
  await waitFor('setup drained', () => hs!.pusher.pendingCount() === 0 && as!.transactions().length > 0);
  return { carol, alice, roomId };
}

const bodyOf = (t: ReceivedRequest) => t.body as Record<string, unknown> & { events: Record<string, unknown>[] };
const api = (path: string, token: string, body: unknown, method: 'PUT' | 'POST' = 'PUT') =>
  fetch(`${hs!.url}/_matrix/client/v3${path}`, { method, headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

describe('user query before pushing (handlers/appservice.py _check_user_exists)', () => {
  it('asks GET /_matrix/app/v1/users/{userId} with the hs_token before the event about an unknown namespaced user', async () => {
    const { carol, roomId } = await setup();
    const before = as!.received.length;
    hs!.model.setMembership(carol.userId, roomId, '@ghost:localhost', 'invite');
    hs!.model.setMembership(carol.userId, roomId, '@alice:localhost', 'leave');
    await waitFor('both pushed', () => as!.received.slice(before).filter((r) => r.path.includes('/transactions/')).length >= 1 && hs!.pusher.pendingCount() === 0);
    const after = as!.received.slice(before);
    expect(after[0]!.method).toBe('GET');
    expect(after[0]!.path).toBe(`/_matrix/app/v1/users/${encodeURIComponent('@ghost:localhost')}`);
    expect(after[0]!.rawHeaders[after[0]!.rawHeaders.indexOf('Authorization') + 1]).toBe(`Bearer ${hs!.registration.hs_token}`);
    const events = after.filter((r) => r.path.includes('/transactions/')).flatMap((t) => bodyOf(t).events);
    // The invite is pushed after the query, and the next event keeps its place behind it.
    expect(events.map((e) => e.state_key)).toEqual(['@ghost:localhost', '@alice:localhost']);
    // Known users (alice) are never queried; the recorded fixtures made no query at all.
    expect(hs!.pusher.userQueries.map((q) => q.userId)).toEqual(['@ghost:localhost']);
  });
});

describe('ephemeral and to-device data (api.py push_bulk, scheduler.py)', () => {
  it('sends only {events} without receive_ephemeral, like every recorded transaction', async () => {
    const { alice, roomId } = await setup();
    await api(`/rooms/${encodeURIComponent(roomId)}/typing/${encodeURIComponent(alice.userId)}`, alice.accessToken, { typing: true, timeout: 3000 });
    hs!.model.sendEvent(alice.userId, roomId, 'm.room.message', { body: 'hi', msgtype: 'm.text' });
    await waitFor('pushed', () => as!.transactions().some((t) => t.rawBody.includes('"hi"')));
    for (const t of as!.transactions()) expect(Object.keys(bodyOf(t))).toEqual(['events']);
    expect(loadTransactions('02-alice-joins-call').every((t) => Object.keys(t.body).join() === 'events')).toBe(true);
  });

  it('puts typing and receipts under `ephemeral` with receive_ephemeral, and under the MSC2409 key with push_ephemeral', async () => {
    for (const [flags, key, absent] of [
      [{ receive_ephemeral: true }, 'ephemeral', 'de.sorunome.msc2409.ephemeral'],
      [{ 'de.sorunome.msc2409.push_ephemeral': true }, 'de.sorunome.msc2409.ephemeral', 'ephemeral'],
    ] as const) {
      const { alice, roomId } = await setup({ flags });
      await api(`/rooms/${encodeURIComponent(roomId)}/typing/${encodeURIComponent(alice.userId)}`, alice.accessToken, { typing: true, timeout: 3000 });
      await api(`/rooms/${encodeURIComponent(roomId)}/receipt/m.read/${encodeURIComponent('$e')}`, alice.accessToken, {}, 'POST');
      await waitFor('edus pushed', () => as!.transactions().flatMap((t) => (bodyOf(t)[key] as unknown[] | undefined) ?? []).length === 2);
      const edus = as!.transactions().flatMap((t) => (bodyOf(t)[key] as Record<string, unknown>[] | undefined) ?? []);
      expect(edus[0]).toEqual({ type: 'm.typing', room_id: roomId, content: { user_ids: [alice.userId] } });
      expect(edus[1]).toMatchObject({ type: 'm.receipt', room_id: roomId, content: { $e: { 'm.read': { [alice.userId]: { ts: expect.any(Number) } } } } });
      for (const t of as!.transactions()) {
        expect(bodyOf(t)).not.toHaveProperty(absent);
        expect(bodyOf(t)['de.sorunome.msc2409.to_device']).toEqual([]);
      }
      await hs!.stop();
      await as!.stop();
      hs = as = undefined;
    }
  });

  it('delivers to-device messages only with the homeserver flag, under de.sorunome.msc2409.to_device with to_user_id/to_device_id', async () => {
    const messages = { messages: { '@alice:localhost': { DEVICEA: { secret: 1 } }, '@eve:elsewhere.org': { X: { secret: 2 } } } };
    const off = await setup({ flags: { receive_ephemeral: true } });
    await api('/sendToDevice/m.room_key_request/t1', off.alice.accessToken, messages);
    expect(hs!.pusher.pendingCount()).toBe(0);
    expect(as!.transactions().flatMap((t) => bodyOf(t)['de.sorunome.msc2409.to_device'] as unknown[])).toEqual([]);
    await hs!.stop();
    await as!.stop();
    const on = await setup({ flags: { receive_ephemeral: true }, toDevice: true });
    await api('/sendToDevice/m.room_key_request/t1', on.alice.accessToken, messages);
    await waitFor('to-device pushed', () => as!.transactions().some((t) => (bodyOf(t)['de.sorunome.msc2409.to_device'] as unknown[]).length > 0));
    const sent = as!.transactions().flatMap((t) => bodyOf(t)['de.sorunome.msc2409.to_device'] as unknown[]);
    expect(sent).toEqual([{ to_user_id: '@alice:localhost', to_device_id: 'DEVICEA', type: 'm.room_key_request', sender: on.alice.userId, content: { secret: 1 } }]);
  });

  it('retries a failed transaction without its ephemeral data, and drops ephemeral-only data while DOWN', async () => {
    const clock = createManualClock(Date.now());
    const { alice, roomId } = await setup({ clock, flags: { receive_ephemeral: true } });
    let release!: () => void;
    as!.script({ status: 200, hold: new Promise<void>((r) => (release = r)) }, { status: 500, body: '{}' });
    hs!.model.sendEvent(alice.userId, roomId, 'm.room.message', { body: 'held', msgtype: 'm.text' });
    await waitFor('held', () => as!.transactions().some((t) => t.rawBody.includes('"held"')));
    // Queued behind the held transaction: an event and a typing EDU go out together next.
    hs!.model.sendEvent(alice.userId, roomId, 'm.room.message', { body: 'with-edu', msgtype: 'm.text' });
    hs!.pusher.enqueueEphemeral([{ type: 'm.typing', room_id: roomId, content: { user_ids: [alice.userId] } }]);
    release();
    await waitFor('down', () => hs!.pusher.isDown());
    hs!.pusher.enqueueEphemeral([{ type: 'm.typing', room_id: roomId, content: { user_ids: [] } }]);
    expect(hs!.pusher.droppedEphemeral()).toBe(1);
    clock.advance(2000);
    await waitFor('recovered', () => !hs!.pusher.isDown());
    const attempts = as!.transactions().filter((t) => t.rawBody.includes('with-edu'));
    expect(attempts).toHaveLength(2);
    expect((bodyOf(attempts[0]!).ephemeral as unknown[]).length).toBe(1);
    expect(bodyOf(attempts[1]!).ephemeral).toEqual([]);
    expect(attempts[1]!.path).toBe(attempts[0]!.path);
    expect(as!.transactions().filter((t) => bodyOf(t).events.length === 0)).toEqual([]);
  });
});

describe('recoverer timing (scheduler.py _Recoverer, transactions/11)', () => {
  it('resets the backoff after a success: a failure after a success waits 4 s, not the doubled delay', async () => {
    const clock = createManualClock(Date.now());
    const { alice, roomId } = await setup({ clock });
    as!.script({ status: 500, body: '{}' }, { status: 500, body: '{}' }, { status: 200, body: '{}' }, { status: 500, body: '{}' }, { status: 200, body: '{}' });
    hs!.model.sendEvent(alice.userId, roomId, 'm.room.message', { body: 'A', msgtype: 'm.text' });
    await waitFor('down', () => hs!.pusher.isDown());
    hs!.model.sendEvent(alice.userId, roomId, 'm.room.message', { body: 'B', msgtype: 'm.text' });
    const count = () => hs!.pusher.attempts.length;
    const base = count();
    clock.advance(2000);
    await waitFor('retry 1 (A fails)', () => count() === base + 1);
    clock.advance(4000);
    await waitFor('retry 2 (A ok, B fails)', () => count() === base + 3);
    clock.advance(3999);
    expect(count()).toBe(base + 3);
    clock.advance(1);
    await waitFor('B after 4 s', () => count() === base + 4 && !hs!.pusher.isDown());
  });

  it('after a restart retries nothing (ping included) until a new event, then sends the old and the new txn 2 s later', async () => {
    const clock = createManualClock(Date.now());
    const { alice, roomId } = await setup({ clock });
    await as!.stop();
    hs!.model.sendEvent(alice.userId, roomId, 'm.room.message', { body: 'pending', msgtype: 'm.text' });
    await waitFor('down', () => hs!.pusher.isDown());
    hs!.restart();
    await as!.restart();
    const before = as!.transactions().length;
    clock.advance(8000);
    expect(await hs!.pusher.ping('after-restart')).toMatchObject({ status: 200 });
    clock.advance(600_000);
    expect(as!.transactions().length).toBe(before);
    hs!.model.sendEvent(alice.userId, roomId, 'm.room.message', { body: 'wake', msgtype: 'm.text' });
    clock.advance(1999);
    expect(as!.transactions().length).toBe(before);
    clock.advance(1);
    await waitFor('both sent', () => as!.transactions().length === before + 2);
    const [old, fresh] = as!.transactions().slice(before);
    expect(old!.rawBody).toContain('pending');
    expect(fresh!.rawBody).toContain('wake');
    expect(Number(fresh!.path.split('/').pop())).toBe(Number(old!.path.split('/').pop()) + 1);
    // The recording: event 3 PUT at 24.179 s, txns 2 and 3 at 26.221 and 26.224 s.
    const rec = loadTransactions('11-txn-ids-across-restarts').filter((t) => t.method === 'PUT');
    const wakePut = loadClient('11-txn-ids-across-restarts').at(-1) as unknown as { _meta: { sent_at: number } };
    expect(rec.slice(1).map((t) => Math.round((t._meta.received_at - wakePut._meta.sent_at) / 1000))).toEqual([2, 2]);
  });
});
