/**
 * MSC4140 delayed events on the fake homeserver against Synapse 1.132's recordings
 * (fixtures/synapse-1.132/client/07a-07c, fixtures/element-call/README.md), and the composed
 * fake (core + TLS federation userinfo + the token helper's is_joined) over real HTTP(S).
 */
import { get } from 'node:https';
import { afterEach, describe, expect, it } from 'vitest';
import { createManualClock, type ManualClock } from '../../common/clock.ts';
import { startComposedHomeserver, type ComposedHomeserver } from '../fake-homeserver/compose.ts';
import { loadClient, loadTransactions } from '../fake-homeserver/fixtures.ts';
import { startRecordingAppservice, type RecordingAppservice } from '../fake-homeserver/recording-appservice.ts';
import { startFakeHomeserver, testRegistration, type FakeHomeserver } from '../fake-homeserver/server.ts';
import { waitFor } from '../support/wait.ts';

const CALL = 'org.matrix.msc3401.call.member';
/** GET over TLS trusting the fake's self-signed certificate. */
const httpsJson = (url: string, ca: string) =>
  new Promise<{ status: number; body: unknown }>((resolve, reject) => {
    get(url, { ca }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString()) as unknown }));
      res.on('error', reject);
    }).on('error', reject);
  });
const MSC4140 = '/_matrix/client/unstable/org.matrix.msc4140';
let hs: FakeHomeserver | undefined;
let as: RecordingAppservice | undefined;
let composed: ComposedHomeserver | undefined;
afterEach(async () => {
  await hs?.stop();
  await as?.stop();
  await composed?.stop();
  hs = as = composed = undefined;
});

interface World {
  clock: ManualClock;
  roomId: string;
  key: string;
  alice: { userId: string; accessToken: string };
  bob: { userId: string; accessToken: string };
  call(method: string, path: string, token: string | undefined, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }>;
}

async function setup(maxEventDelayMs?: number | null): Promise<World> {
  const clock = createManualClock(Date.now());
  as = await startRecordingAppservice();
  hs = await startFakeHomeserver({ registration: testRegistration(as.url), clock, maxEventDelayMs });
  const carol = hs.model.registerUser('carol', { admin: true }).userId;
  const alice = hs.model.registerUser('alice');
  const bob = hs.model.registerUser('bob');
  const roomId = hs.model.createRoom(carol, { version: '10', invite: [alice.userId, bob.userId], power_level_content_override: { events: { [CALL]: 0 } } });
  for (const u of [alice.userId, bob.userId]) hs.model.setMembership(u, roomId, u, 'join');
  const base = hs.url;
  return {
    clock,
    roomId,
    key: `_${alice.userId}_DEVICEA_m.call`,
    alice,
    bob,
    async call(method, path, token, body) {
      const init: RequestInit = { method, headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), 'Content-Type': 'application/json' } };
      if (body !== undefined) init.body = JSON.stringify(body);
      const res = await fetch(`${base}${path}`, init);
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    },
  };
}

const statePath = (w: World, query = '') => `/_matrix/client/v3/rooms/${encodeURIComponent(w.roomId)}/state/${CALL}/${encodeURIComponent(w.key)}${query}`;
const join = (w: World) => hs!.model.sendState(w.alice.userId, w.roomId, CALL, w.key, { application: 'm.call', call_id: '', scope: 'm.room', device_id: 'DEVICEA' });
/** The recorded answers of a flow, in order, for calls matching `match`. */
const recorded = (flow: string, match: (path: string, body: unknown) => boolean) =>
  loadClient(flow).filter((c) => match(c.request.path, c.request.body)).map((c) => ({ status: c.status, body: c.body }));

describe('delayed events like Synapse 1.132 (MSC4140)', () => {
  it('schedules with ?org.matrix.msc4140.delay, lists it, and fires it as a normal event when the delay ends (07a)', async () => {
    const w = await setup();
    join(w);
    const put = await w.call('PUT', statePath(w, '?org.matrix.msc4140.delay=2000'), w.alice.accessToken, {});
    expect(put.status).toBe(200);
    expect(Object.keys(put.body)).toEqual(['delay_id']);
    expect(put.body.delay_id).toMatch(/^syd_[A-Za-z]{20}$/);
    const list = await w.call('GET', `${MSC4140}/delayed_events`, w.alice.accessToken);
    const rec = recorded('07a-delayed-leave-fires', (p) => p.endsWith('/delayed_events'));
    expect(Object.keys((list.body.delayed_events as Record<string, unknown>[])[0]!).toSorted()).toEqual(Object.keys((rec[0]!.body as { delayed_events: object[] }).delayed_events[0]!).toSorted());
    expect(list.body.delayed_events).toEqual([{ delay_id: put.body.delay_id, room_id: w.roomId, type: CALL, state_key: w.key, delay: 2000, running_since: w.clock.now(), content: {} }]);
    w.clock.advance(1999);
    expect(hs!.model.stateEvent(w.roomId, CALL, w.key)!.content).not.toEqual({});
    w.clock.advance(1);
    expect((await w.call('GET', statePath(w), w.alice.accessToken)).body).toEqual({});
    expect((await w.call('GET', `${MSC4140}/delayed_events`, w.alice.accessToken)).body).toEqual(rec[1]!.body);
    await waitFor('fired leave pushed', () => as!.transactions().some((t) => t.rawBody.includes('"content":{}')));
    const fired = as!.transactions().flatMap((t) => (t.body as { events: Record<string, unknown>[] }).events).find((e) => e.type === CALL && Object.keys(e.content as object).length === 0)!;
    const recFired = loadTransactions('07a-delayed-leave-fires')[1]!.body.events[0]!;
    expect(Object.keys(fired)).toEqual(Object.keys(recFired));
    expect(Object.keys(fired.unsigned as object).toSorted()).toEqual(Object.keys(recFired.unsigned as object).toSorted());
  });

  it('manages with the {action} body: restart moves running_since, cancel and send remove it, then 404; bad or missing action 400 (07b)', async () => {
    const w = await setup();
    join(w);
    const id = (await w.call('PUT', statePath(w, '?org.matrix.msc4140.delay=30000'), w.alice.accessToken, {})).body.delay_id as string;
    w.clock.advance(1000);
    const act = (delayId: string, body: unknown, token = w.alice.accessToken) => w.call('POST', `${MSC4140}/delayed_events/${delayId}`, token, body);
    expect(await act(id, { action: 'restart' })).toEqual({ status: 200, body: {} });
    expect(((await w.call('GET', `${MSC4140}/delayed_events`, w.alice.accessToken)).body.delayed_events as { running_since: number }[])[0]!.running_since).toBe(w.clock.now());
    expect(await act(id, { action: 'cancel' })).toEqual({ status: 200, body: {} });
    const rec = recorded('07b-delayed-management', (p) => /delayed_events\/syd_/.test(p));
    // rec: restart 200, cancel 200, restart 404, send 200, send 404, unknown 404, pause 400, {} 400, bob 404, cancel 200
    expect(await act(id, { action: 'restart' })).toEqual(rec[2]);
    const sendId = (await w.call('PUT', statePath(w, '?org.matrix.msc4140.delay=30000'), w.alice.accessToken, {})).body.delay_id as string;
    expect(await act(sendId, { action: 'send' })).toEqual(rec[3]);
    expect(hs!.model.stateEvent(w.roomId, CALL, w.key)!.content).toEqual({});
    expect(await act(sendId, { action: 'send' })).toEqual(rec[4]);
    expect(await act('syd_unknownUnknownUnkno', { action: 'restart' })).toEqual(rec[5]);
    const misc = (await w.call('PUT', statePath(w, '?org.matrix.msc4140.delay=30000'), w.alice.accessToken, {})).body.delay_id as string;
    expect(await act(misc, { action: 'pause' })).toEqual(rec[6]);
    expect(await act(misc, {})).toEqual(rec[7]);
    expect(await act(misc, { action: 'cancel' }, w.bob.accessToken)).toEqual(rec[8]);
    expect(await act(misc, { action: 'cancel' })).toEqual(rec[9]);
  });

  it('refuses a delay above the maximum or not an integer with the recorded 400s, and answers 400 M_MAX_DELAY_UNSUPPORTED when MSC4140 is off', async () => {
    const w = await setup();
    const rec = recorded('07b-delayed-management', (p) => p.includes('delay=86400001') || p.includes('delay=abc'));
    expect(await w.call('PUT', statePath(w, '?org.matrix.msc4140.delay=86400001'), w.alice.accessToken, {})).toEqual(rec[0]);
    expect(await w.call('PUT', statePath(w, '?org.matrix.msc4140.delay=abc'), w.alice.accessToken, {})).toEqual(rec[1]);
    await hs!.stop();
    await as!.stop();
    const off = await setup(null);
    expect((await off.call('GET', '/_matrix/client/versions', undefined)).body.unstable_features).toMatchObject({ 'org.matrix.msc4140': false });
    expect(await off.call('PUT', statePath(off, '?org.matrix.msc4140.delay=1000'), off.alice.accessToken, {})).toEqual({
      status: 400,
      body: { errcode: 'M_UNKNOWN', error: 'Delayed events are not supported on this server', 'org.matrix.msc4140.errcode': 'M_MAX_DELAY_UNSUPPORTED' },
    });
  });

  it('cancels pending delayed state when another user writes the key, not when the owner does (07c)', async () => {
    const w = await setup();
    join(w);
    const own = (await w.call('PUT', statePath(w, '?org.matrix.msc4140.delay=30000'), w.alice.accessToken, {})).body.delay_id as string;
    hs!.model.sendState(w.alice.userId, w.roomId, CALL, w.key, { application: 'm.call', device_id: 'DEVICEA', call_id: 'again' });
    expect(hs!.delayed.pendingIds()).toEqual([own]);
    expect((await w.call('PUT', statePath(w), w.bob.accessToken, {})).status).toBe(200);
    const rec = recorded('07c-delayed-leave-cancelled-by-other-user', (p) => p.includes('delayed_events'));
    expect((await w.call('GET', `${MSC4140}/delayed_events`, w.alice.accessToken)).body).toEqual(rec[1]!.body);
    expect(await w.call('POST', `${MSC4140}/delayed_events/${own}`, w.alice.accessToken, { action: 'restart' })).toEqual(rec[2]);
  });

  it('checks power levels when the event is sent, not when scheduled', async () => {
    const w = await setup();
    const carol = '@carol:localhost';
    const topic = await w.call('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(w.roomId)}/state/m.room.topic?org.matrix.msc4140.delay=1000`, w.alice.accessToken, { topic: 'x' });
    expect(topic.status).toBe(200);
    hs!.model.sendState(carol, w.roomId, 'm.room.power_levels', '', { ...hs!.model.stateEvent(w.roomId, 'm.room.power_levels', '')!.content, events: { [CALL]: 0, 'm.room.topic': 100 } });
    w.clock.advance(1000);
    expect(hs!.model.stateEvent(w.roomId, 'm.room.topic', '')).toBeUndefined();
    expect(hs!.delayed.refused).toEqual([{ delayId: topic.body.delay_id, error: expect.stringContaining('user_level (0) < send_level (100)') }]);
  });

  it('has no path-form action on 1.132 (404 M_UNRECOGNIZED) and needs a user for the {action} form (401 M_MISSING_TOKEN)', async () => {
    const w = await setup();
    join(w);
    const id = (await w.call('PUT', statePath(w, '?org.matrix.msc4140.delay=30000'), w.alice.accessToken, {})).body.delay_id as string;
    expect(await w.call('POST', `${MSC4140}/delayed_events/${id}/restart`, w.alice.accessToken, {})).toEqual({ status: 404, body: { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' } });
    expect(await w.call('POST', `${MSC4140}/delayed_events/${id}`, undefined, { action: 'restart' })).toEqual({ status: 401, body: { errcode: 'M_MISSING_TOKEN', error: 'Missing access token.' } });
    expect(await w.call('POST', `${MSC4140}/delayed_events/${id}?user_id=${encodeURIComponent(w.alice.userId)}`, hs!.registration.as_token, { action: 'restart' })).toEqual({ status: 200, body: {} });
  });
});

describe('composed fake homeserver (core + federation.ts + delayed-events.ts)', () => {
  it('answers OpenID tokens minted by the core on the TLS federation userinfo, and is_joined from the core`s rooms', async () => {
    composed = await startComposedHomeserver({ registration: testRegistration(null) });
    const { hs: core, federation } = composed;
    const alice = core.model.registerUser('alice');
    const carol = core.model.registerUser('carol').userId;
    const roomId = core.model.createRoom(carol, { invite: [alice.userId] });
    core.model.setMembership(alice.userId, roomId, alice.userId, 'join');
    const minted = await fetch(`${core.url}/_matrix/client/v3/user/${encodeURIComponent(alice.userId)}/openid/request_token`, { method: 'POST', headers: { Authorization: `Bearer ${alice.accessToken}` }, body: '{}' });
    const token = ((await minted.json()) as { access_token: string }).access_token;
    const info = await httpsJson(`${federation.url}/_matrix/federation/v1/openid/userinfo?access_token=${encodeURIComponent(token)}`, federation.certPem);
    expect(info).toEqual({ status: 200, body: { sub: alice.userId } });
    const bad = await httpsJson(`${federation.url}/_matrix/federation/v1/openid/userinfo?access_token=nope`, federation.certPem);
    expect(bad).toEqual({ status: 401, body: { errcode: 'M_UNKNOWN_TOKEN', error: 'Access Token unknown or expired' } });
    const isJoined = (mxid: string) =>
      fetch(`${core.url}/_matrix/client/unstable/io.element.msc4502/rooms/${encodeURIComponent(roomId)}/is_joined?mxid=${encodeURIComponent(mxid)}`, { headers: { Authorization: `Bearer ${core.registration.as_token}` } }).then((r) => r.json());
    expect(await isJoined(alice.userId)).toEqual({ joined: true });
    core.model.setMembership(alice.userId, roomId, alice.userId, 'leave');
    expect(await isJoined(alice.userId)).toEqual({ joined: false });
    // The core still serves its own routes, e.g. the 1.132 delayed-event management.
    const r = await fetch(`${core.url}${MSC4140}/delayed_events/syd_x/restart`, { method: 'POST', headers: { Authorization: `Bearer ${alice.accessToken}` }, body: '{}' });
    expect(r.status).toBe(404);
  });
});
