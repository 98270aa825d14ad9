/**
 * The fake homeserver's client-server answers compared with Synapse 1.132's recorded ones
 * (fixtures/synapse-1.132/cs-api): status codes, errcodes, error texts and key sets, over real
 * HTTP on loopback, in a world built like the fixtures' (carol's v10 and msc3757.11 rooms,
 * alice and bob joined, alice left the call in v10, her msc3757 membership redacted, bob kicked
 * from the msc3757 room). Ids and timestamps differ by construction and are not compared.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCsApi } from '../fake-homeserver/fixtures.ts';
import { startRecordingAppservice, type RecordingAppservice } from '../fake-homeserver/recording-appservice.ts';
import { startFakeHomeserver, testRegistration, type FakeHomeserver } from '../fake-homeserver/server.ts';

const CALL = 'org.matrix.msc3401.call.member';
const FIX_V10 = '!PbxdPfkauVAMlXAEmq:localhost';
const FIX_3757 = '!NUZYQokNdXinmvjpvz:localhost';

let hs: FakeHomeserver;
let as: RecordingAppservice;
let v10: string;
let r3757: string;
let aliceToken: string;
const enc = encodeURIComponent;

function member(roomId: string, user: string, device: string): Record<string, unknown> {
  return {
    application: 'm.call', call_id: '', scope: 'm.room', device_id: device, membershipID: `${user}:${device}`, expires: 14_400_000,
    'm.call.intent': 'video', focus_active: { type: 'livekit', focus_selection: 'multi_sfu' },
    foci_preferred: [{ livekit_alias: roomId, type: 'livekit', livekit_service_url: 'https://rtc.example.org/livekit/jwt' }],
  };
}

beforeAll(async () => {
  as = await startRecordingAppservice();
  hs = await startFakeHomeserver({ registration: testRegistration(as.url) });
  const m = hs.model;
  const carol = m.registerUser('carol', { admin: true }).userId;
  const alice = m.registerUser('alice');
  aliceToken = alice.accessToken;
  const bob = m.registerUser('bob').userId;
  const opts = { invite: [alice.userId, bob], name: 'rtc-fixtures', power_level_content_override: { events: { [CALL]: 0 } } };
  v10 = m.createRoom(carol, { version: '10', ...opts });
  r3757 = m.createRoom(carol, { version: 'org.matrix.msc3757.11', ...opts });
  for (const r of [v10, r3757]) for (const u of [alice.userId, bob]) m.setMembership(u, r, u, 'join');
  m.sendState(alice.userId, v10, CALL, `_${alice.userId}_DEVICEA_m.call`, member(v10, alice.userId, 'DEVICEA'));
  m.sendState(alice.userId, v10, CALL, `_${alice.userId}_DEVICEA_m.call`, {});
  m.sendState(bob, v10, CALL, `_${bob}_DEVICEB_m.call`, member(v10, bob, 'DEVICEB'));
  m.sendState(bob, v10, CALL, `_${bob}_DEVICEB_m.call`, {});
  m.sendState(carol, r3757, CALL, `${alice.userId}_DEVICEA_m.call`, {}); // flow 06: carol overrides alice's key
  const joinId = m.sendState(alice.userId, r3757, CALL, `${alice.userId}_DEVICEA_m.call`, member(r3757, alice.userId, 'DEVICEA'));
  m.redact(alice.userId, r3757, joinId, 'fixtures: redact call.member (v11)');
  m.sendState(bob, r3757, CALL, `${bob}_DEVICEB_m.call`, member(r3757, bob, 'DEVICEB'));
});
afterAll(async () => {
  await hs.stop();
  await as.stop();
});

interface Answer {
  status: number;
  headers: Headers;
  body: unknown;
}

async function call(method: string, path: string, token: string | undefined, body?: unknown): Promise<Answer> {
  const res = await fetch(`${hs.url}${path}`, {
    method,
    headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, body: await res.json() };
}
const asCall = (method: string, path: string, body?: unknown) => call(method, path, hs.registration.as_token, body);

/** The fixture's answer with its room ids swapped for ours. */
function recorded(name: string): { status: number; body: unknown; headers: Record<string, string> } {
  const f = loadCsApi(name);
  const text = JSON.stringify(f.body).replaceAll(FIX_V10, v10).replaceAll(FIX_3757, r3757);
  return { status: f.status, body: JSON.parse(text) as unknown, headers: f.headers };
}

/** Errors must match exactly (errcode, error, extra keys); successes by status and key set. */
function expectLikeRecorded(got: Answer, name: string): void {
  const rec = recorded(name);
  expect(got.status).toBe(rec.status);
  if (rec.status >= 400) expect(got.body).toEqual(rec.body);
  else if (Array.isArray(rec.body)) expect(Array.isArray(got.body)).toBe(true);
  else expect(Object.keys(got.body as object).toSorted()).toEqual(Object.keys(rec.body as object).toSorted());
}

const keysByType = (events: Record<string, unknown>[]) =>
  Object.fromEntries(events.map((e) => [`${e.type as string}|${e.state_key as string}`, Object.keys(e).toSorted()]));

describe('fake homeserver client-server API like Synapse 1.132', () => {
  it('answers with Synapse`s headers: chunked JSON, no-cache, Server and CORS (rule 33)', async () => {
    const got = await asCall('GET', '/_matrix/client/v3/account/whoami');
    const rec = recorded('whoami').headers;
    for (const h of ['content-type', 'cache-control', 'server', 'transfer-encoding', 'access-control-allow-origin', 'access-control-allow-methods', 'access-control-allow-headers', 'access-control-expose-headers']) {
      expect(got.headers.get(h), h).toBe(rec[h]);
    }
    expect(got.headers.get('content-length')).toBeNull();
  });

  it('serves /versions with 1.132`s versions and unstable features, MSC4140 on', async () => {
    const got = await call('GET', '/_matrix/client/versions', undefined);
    expect(got.body).toEqual(recorded('versions').body);
  });

  it('whoami with the as_token is the bot, without device_id', async () => {
    const got = await asCall('GET', '/_matrix/client/v3/account/whoami');
    expectLikeRecorded(got, 'whoami');
    expect(got.body).toEqual(recorded('whoami').body);
  });

  it('whoami with ?user_id= masquerades as a namespaced user', async () => {
    const got = await asCall('GET', `/_matrix/client/v3/account/whoami?user_id=${enc('@alice:localhost')}`);
    expect(got.body).toEqual(recorded('whoami-as-alice').body);
  });

  it('whoami with a bad token is 401 M_UNKNOWN_TOKEN with soft_logout false', async () => {
    expectLikeRecorded(await call('GET', '/_matrix/client/v3/account/whoami', 'not-a-real-token'), 'whoami-bad-token');
  });

  it('refuses masquerading outside the users namespace and as unregistered users (auth/base.py)', async () => {
    const outside = await asCall('GET', `/_matrix/client/v3/account/whoami?user_id=${enc('@eve:elsewhere.org')}`);
    expect(outside).toMatchObject({ status: 403, body: { errcode: 'M_FORBIDDEN', error: 'Application service cannot masquerade as this user (@eve:elsewhere.org).' } });
    const ghost = await asCall('GET', `/_matrix/client/v3/account/whoami?user_id=${enc('@ghost:localhost')}`);
    expect(ghost).toMatchObject({ status: 403, body: { errcode: 'M_FORBIDDEN', error: 'Application service has not registered this user (@ghost:localhost)' } });
  });

  it('/state as the bot that never joined is 403 "not in room, and room previews are disabled"', async () => {
    expectLikeRecorded(await asCall('GET', `/_matrix/client/v3/rooms/${enc(v10)}/state`), 'state-as-bot-not-joined');
  });

  it('/state/{type}/{key} as the bot that never joined is 403', async () => {
    const got = await asCall('GET', `/_matrix/client/v3/rooms/${enc(v10)}/state/${CALL}/${enc('_@alice:localhost_DEVICEA_m.call')}`);
    expectLikeRecorded(got, 'state-call-member-as-bot-not-joined');
  });

  it('joined_members as the never-joined bot is 200 with every joined member', async () => {
    const got = await asCall('GET', `/_matrix/client/v3/rooms/${enc(v10)}/joined_members`);
    expect(got.body).toEqual(recorded('joined-members-as-bot-not-joined').body);
  });

  it('joined_members masquerading as alice is 200', async () => {
    const got = await asCall('GET', `/_matrix/client/v3/rooms/${enc(v10)}/joined_members?user_id=${enc('@alice:localhost')}`);
    expect(got.body).toEqual(recorded('joined-members-as-alice').body);
  });

  it('/state as alice is the v1 format: same keys per event as recorded, redacted_because included', async () => {
    for (const [roomId, name] of [[v10, 'state-as-alice-v10'], [r3757, 'state-as-alice-msc3757']] as const) {
      const got = await asCall('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/state?user_id=${enc('@alice:localhost')}`);
      expect(got.status).toBe(200);
      const rec = keysByType(recorded(name).body as Record<string, unknown>[]);
      const mine = keysByType(got.body as Record<string, unknown>[]);
      // Only keys whose history this world reproduces (the fixtures also changed power levels).
      const same = Object.keys(rec).filter((k) => k.startsWith(CALL) || k === 'm.room.create|' || k === 'm.room.member|@carol:localhost');
      for (const k of same) expect(mine[k], `${name} ${k}`).toEqual(rec[k]);
      expect(Object.keys(mine).filter((k) => k.startsWith(CALL)).toSorted()).toEqual(Object.keys(rec).filter((k) => k.startsWith(CALL)).toSorted());
    }
  });

  it('/state/{type}/{key} gives the content, {} for a left or redacted key, 404 for a missing one, and the ?format=event quirk', async () => {
    const q = `user_id=${enc('@alice:localhost')}`;
    const path = (roomId: string, key: string, extra = '') => `/_matrix/client/v3/rooms/${enc(roomId)}/state/${CALL}/${enc(key)}?${extra}${q}`;
    expect((await asCall('GET', path(r3757, '@bob:localhost_DEVICEB_m.call'))).body).toEqual(recorded('state-call-member-bob-msc3757').body);
    expect((await asCall('GET', path(v10, '_@alice:localhost_DEVICEA_m.call'))).body).toEqual(recorded('state-call-member-alice-v10-left').body);
    expect((await asCall('GET', path(r3757, '@alice:localhost_DEVICEA_m.call'))).body).toEqual(recorded('state-call-member-alice-msc3757-redacted').body);
    expectLikeRecorded(await asCall('GET', path(v10, '_@nobody:localhost_X_m.call')), 'state-call-member-missing');
    const ev = await asCall('GET', path(r3757, '@bob:localhost_DEVICEB_m.call', 'format=event&'));
    const rec = recorded('state-call-member-bob-msc3757-format-event').body as Record<string, unknown>;
    expect(Object.keys(ev.body as object)).toEqual(Object.keys(rec));
    const got = ev.body as Record<string, unknown>;
    expect(got.unsigned).toEqual({ age_ts: got.origin_server_ts });
    expect(got.content).toEqual(rec.content);
  });

  it('/joined_rooms lists a masqueraded user`s rooms and none for the bot', async () => {
    const alice = await asCall('GET', `/_matrix/client/v3/joined_rooms?user_id=${enc('@alice:localhost')}`);
    expectLikeRecorded(alice, 'joined-rooms-as-alice');
    expect((alice.body as { joined_rooms: string[] }).joined_rooms.toSorted()).toEqual([v10, r3757].toSorted());
    expect((await asCall('GET', '/_matrix/client/v3/joined_rooms')).body).toEqual(recorded('joined-rooms-as-bot').body);
  });

  it('/members as alice is a chunk of member events with the recorded keys', async () => {
    const got = await asCall('GET', `/_matrix/client/v3/rooms/${enc(r3757)}/members?user_id=${enc('@alice:localhost')}`);
    const rec = recorded('members-as-alice').body as { chunk: Record<string, unknown>[] };
    const chunk = (got.body as { chunk: Record<string, unknown>[] }).chunk;
    expect(chunk.map((e) => e.state_key).toSorted()).toEqual(rec.chunk.map((e) => e.state_key).toSorted());
    expect(keysByType(chunk)).toEqual(keysByType(rec.chunk));
  });

  it('pings the appservice with {transaction_id} (null when absent) and returns duration_ms', async () => {
    const before = as.received.length;
    const up = await asCall('POST', `/_matrix/client/v1/appservice/${hs.registration.id}/ping`, { transaction_id: 'fixtures-ping-up' });
    expectLikeRecorded(up, 'appservice-ping-up');
    const none = await asCall('POST', `/_matrix/client/v1/appservice/${hs.registration.id}/ping`, {});
    expectLikeRecorded(none, 'appservice-ping-no-txn-id');
    const pings = as.received.slice(before).filter((r) => r.path === '/_matrix/app/v1/ping');
    const rec = loadCsApi('appservice-ping-no-txn-id') as unknown as { appservice_side: { _meta: { raw_body: string }; headers: Record<string, string> }[] };
    expect(pings.map((p) => p.rawBody)).toEqual(['{"transaction_id":"fixtures-ping-up"}', rec.appservice_side[0]!._meta.raw_body]);
    expect(pings[0]!.rawHeaders.filter((_, i) => i % 2 === 0)).toEqual(Object.keys(rec.appservice_side[0]!.headers));
  });

  it('a ping with the listener down is 502 M_CONNECTION_FAILED with Twisted`s message', async () => {
    await as.stop();
    try {
      expectLikeRecorded(await asCall('POST', `/_matrix/client/v1/appservice/${hs.registration.id}/ping`, { transaction_id: 'fixtures-ping-down' }), 'appservice-ping-down');
    } finally {
      await as.restart();
    }
  });

  it('a ping to another appservice id is 403 "Mismatching application service ID in path"', async () => {
    expectLikeRecorded(await asCall('POST', '/_matrix/client/v1/appservice/not-my-id/ping', { transaction_id: 'x' }), 'appservice-ping-wrong-id');
  });

  it('mints OpenID tokens for the caller itself, masquerading included, and 403 for another user', async () => {
    const own = await call('POST', `/_matrix/client/v3/user/${enc('@alice:localhost')}/openid/request_token`, aliceToken, {});
    expectLikeRecorded(own, 'openid-request-token-as-alice');
    expect(own.body).toMatchObject({ token_type: 'Bearer', matrix_server_name: 'localhost', expires_in: 3600 });
    const masq = await asCall('POST', `/_matrix/client/v3/user/${enc('@alice:localhost')}/openid/request_token?user_id=${enc('@alice:localhost')}`, {});
    expectLikeRecorded(masq, 'openid-request-token-masquerading-alice');
    expectLikeRecorded(await call('POST', `/_matrix/client/v3/user/${enc('@bob:localhost')}/openid/request_token`, aliceToken, {}), 'openid-request-token-other-user');
  });

  it('answers the federation userinfo like Synapse: {sub}, 401 M_UNKNOWN_TOKEN, 401 M_MISSING_TOKEN', async () => {
    const minted = await asCall('POST', `/_matrix/client/v3/user/${enc('@alice:localhost')}/openid/request_token?user_id=${enc('@alice:localhost')}`, {});
    const token = (minted.body as { access_token: string }).access_token;
    const valid = await call('GET', `/_matrix/federation/v1/openid/userinfo?access_token=${enc(token)}`, undefined);
    expect(valid).toMatchObject({ status: 200, body: recorded('openid-userinfo-valid').body });
    expectLikeRecorded(await call('GET', '/_matrix/federation/v1/openid/userinfo?access_token=invalid-openid-token', undefined), 'openid-userinfo-invalid');
    expectLikeRecorded(await call('GET', '/_matrix/federation/v1/openid/userinfo', undefined), 'openid-userinfo-missing');
  });
});

describe('fake homeserver state access like synapse/handlers/message.py', () => {
  it('a kicked user reads the state at their leave, not what changed after (state-as-bob-after-kick)', async () => {
    const m = hs.model;
    const [carol, alice, bob] = ['@carol:localhost', '@alice:localhost', '@bob:localhost'];
    const roomId = m.createRoom(carol, { version: 'org.matrix.msc3757.11', invite: [alice, bob], power_level_content_override: { events: { [CALL]: 0 } } });
    for (const u of [alice, bob]) m.setMembership(u, roomId, u, 'join');
    m.sendState(bob, roomId, CALL, `${bob}_DEVICEB_m.call`, member(roomId, bob, 'DEVICEB'));
    m.setMembership(carol, roomId, bob, 'leave', 'fixtures: kick for left-user view');
    m.sendState(alice, roomId, CALL, `${alice}_DEVICEA_m.call`, member(roomId, alice, 'DEVICEA'));
    const got = await asCall('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/state?user_id=${enc(bob)}`);
    expect(got.status).toBe(200);
    const events = got.body as { type: string; state_key: string; content: Record<string, unknown> }[];
    expect(events.find((e) => e.type === 'm.room.member' && e.state_key === bob)?.content).toEqual({ membership: 'leave', reason: 'fixtures: kick for left-user view' });
    expect(events.some((e) => e.type === CALL && e.state_key === `${bob}_DEVICEB_m.call`)).toBe(true);
    expect(events.some((e) => e.type === CALL && e.state_key.startsWith(alice))).toBe(false);
    const single = await asCall('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/state/${CALL}/${enc(`${alice}_DEVICEA_m.call`)}?user_id=${enc(bob)}`);
    expect(single.status).toBe(404);
    const kicked = await asCall('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/joined_members?user_id=${enc(bob)}`);
    expect(Object.keys((kicked.body as { joined: object }).joined).toSorted()).toEqual([alice, carol]);
    expect(recorded('joined-members-as-bob-after-kick').status).toBe(200);
  });

  it('a world_readable room is readable by anyone; a banned user of another room is refused', async () => {
    const m = hs.model;
    const [carol, bob] = ['@carol:localhost', '@bob:localhost'];
    const roomId = m.createRoom(carol, { version: '10', invite: [bob] });
    m.setMembership(bob, roomId, bob, 'join');
    m.setMembership(carol, roomId, bob, 'ban', 'go');
    const path = `/_matrix/client/v3/rooms/${enc(roomId)}/state`;
    const banned = await asCall('GET', `${path}?user_id=${enc(bob)}`);
    expect(banned).toMatchObject({ status: 403, body: { errcode: 'M_FORBIDDEN', error: `User ${bob} not in room ${roomId}, and room previews are disabled` } });
    expect((await asCall('GET', path)).status).toBe(403);
    m.sendState(carol, roomId, 'm.room.history_visibility', '', { history_visibility: 'world_readable' });
    const bot = await asCall('GET', path);
    expect(bot.status).toBe(200);
    expect((bot.body as { type: string; content: { history_visibility?: string } }[]).find((e) => e.type === 'm.room.history_visibility')?.content).toEqual({ history_visibility: 'world_readable' });
    expect((await asCall('GET', `${path}?user_id=${enc(bob)}`)).status).toBe(200);
  });
});
