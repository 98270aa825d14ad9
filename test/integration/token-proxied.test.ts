/**
 * The homeserver-proxied endpoints (MSC4195 via the MSC4512 appservice proxy): hs_token and
 * identity headers, both body shapes, `url` checks, is_joined, fed_proxy relaying, delayed-event
 * look-up and identity assertion on restart/send. Requests go straight to the token service with
 * the headers Synapse adds, and once through the fake homeserver's proxy end to end.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { liveKitIdentityForMember, liveKitIdentityForMemberId, liveKitRoomAlias } from '../../bridge/token/names.ts';
import { startTestSfu, TEST_API_KEY, TEST_API_SECRET, type TestSfu } from '../support/sfu-harness.ts';
import { waitFor } from '../support/wait.ts';
import { AS_TOKEN, claimsOf, HS_TOKEN, startTokenHarness, type TokenHarness, type TokenHarnessOptions } from './token-harness.ts';

const ROOM = '!room:example.com';
const CS = '/_matrix/client/unstable/io.element.msc4195/rtc/livekit';
const SS = '/_matrix/federation/unstable/io.element.msc4195/rtc/livekit/get_token';
const running: TokenHarness[] = [];
afterEach(async () => {
  for (const h of running.splice(0)) await h.stop();
});
/** alice's server (the harness's) is not full-access unless a test says so. */
async function start(opts: TokenHarnessOptions = {}): Promise<TokenHarness> {
  const h = await startTokenHarness({ fullAccess: 'trusted.example.com', ...opts });
  running.push(h);
  return h;
}
const startRestricted = start;
/** alice's server is the full-access one. */
async function startFull(opts: TokenHarnessOptions = {}): Promise<TokenHarness> {
  const h = await startTokenHarness(opts);
  running.push(h);
  return h;
}
const alice = (h: TokenHarness) => `@alice:${h.fed.serverName}`;
const csHeaders = (mxid?: string, token: string | null = HS_TOKEN) => ({
  ...(token ? { Authorization: `Bearer ${token}` } : {}),
  ...(mxid ? { 'X-Matrix-User-Identifier': mxid } : {}),
});
const ssHeaders = (origin?: string, token: string | null = HS_TOKEN) => ({
  ...(token ? { Authorization: `Bearer ${token}` } : {}),
  ...(origin ? { 'X-Matrix-Origin': origin } : {}),
});
const lineA = (h: TokenHarness, extra: Record<string, unknown> = {}) => ({
  url: h.config.livekit.url,
  room_id: ROOM,
  slot_id: 'm.call#',
  member: { id: 'member-1', claimed_user_id: alice(h), claimed_device_id: 'DEVICE' },
  ...extra,
});
const lineB = (h: TokenHarness, extra: Record<string, unknown> = {}) => ({
  url: h.config.livekit.url,
  room_id: ROOM,
  slot_id: 'm.call#',
  member_id: 'member-1',
  ...extra,
});

describe('C-S get_token', () => {
  it('rejects a request without the homeserver token (missing_hs_token)', async () => {
    const h = await start();
    const res = await h.post(`${CS}/get_token`, lineA(h), csHeaders(alice(h), null));
    expect(res.status).toBe(401);
    expect(res.json).toEqual({ errcode: 'M_MISSING_TOKEN', error: 'Missing homeserver access token' });
  });

  it('rejects a wrong homeserver token (wrong_hs_token)', async () => {
    const h = await start();
    const res = await h.post(`${CS}/get_token`, lineA(h), csHeaders(alice(h), 'not_the_hs_token'));
    expect(res.json).toEqual({ errcode: 'M_UNKNOWN_TOKEN', error: 'Unrecognised homeserver access token' });
  });

  it('rejects a request without X-Matrix-User-Identifier (missing_header)', async () => {
    const h = await start();
    const res = await h.post(`${CS}/get_token`, lineA(h), csHeaders());
    expect(res.status).toBe(401);
    expect(res.json).toEqual({ errcode: 'M_UNAUTHORIZED', error: 'Missing request authorization' });
  });

  it('takes the identity from the header only (claimed_user_id_mismatch_is_ignored)', async () => {
    const h = await start();
    const bob = `@bob:${h.fed.serverName}`;
    h.hs.setJoined(ROOM, bob, true);
    const res = await h.post(`${CS}/get_token`, lineB(h), csHeaders(bob));
    expect(res.status).toBe(200);
    expect(claimsOf(res.json!.jwt).sub).toBe(liveKitIdentityForMemberId(bob, 'member-1'));
    expect(h.hs.requests.some((r) => r.path.endsWith('/is_joined') && r.query.mxid === bob)).toBe(true);
  });

  it('rejects a malformed user identifier (malformed_header)', async () => {
    const h = await start();
    const res = await h.post(`${CS}/get_token`, lineA(h), csHeaders('not-an-mxid'));
    expect(res.json).toEqual({ errcode: 'M_INVALID_PARAM', error: 'Malformed user identifier' });
  });

  it('rejects a url other than ours (url_mismatch)', async () => {
    const h = await start();
    const res = await h.post(`${CS}/get_token`, lineA(h, { url: 'wss://other.example' }), csHeaders(alice(h)));
    expect(res.status).toBe(400);
    expect(res.json).toEqual({ errcode: 'M_INVALID_PARAM', error: "The request `url` does not match this service's LiveKit URL" });
    expect(h.hs.requests.filter((r) => r.path.endsWith('/is_joined'))).toEqual([]);
  });

  it('rejects an empty url (missing_url)', async () => {
    const h = await start();
    const res = await h.post(`${CS}/get_token`, lineA(h, { url: '' }), csHeaders(alice(h)));
    expect(res.status).toBe(400);
    expect(res.json!.errcode).toBe('M_BAD_JSON');
  });

  it('gives a non-member 403 (not_a_room_member)', async () => {
    const h = await start();
    const res = await h.post(`${CS}/get_token`, lineA(h), csHeaders(alice(h)));
    expect(res.status).toBe(403);
    expect(res.json).toEqual({ errcode: 'M_FORBIDDEN', error: 'The requesting user is not a member of the room' });
  });

  it('answers 502 when is_joined fails', async () => {
    const h = await start();
    h.hs.setIsJoinedFailure(500);
    const res = await h.post(`${CS}/get_token`, lineA(h), csHeaders(alice(h)));
    expect(res.status).toBe(502);
    expect(res.json).toEqual({ errcode: 'M_UNKNOWN', error: 'Unable to verify room membership' });
  });

  it('rejects when our client-server API is unresolvable (unresolvable_cs_api)', async () => {
    const h = await start({ env: { LIVEKIT_CS_API_URL_OVERRIDES: '' } });
    const res = await h.post(`${CS}/get_token`, lineA(h), csHeaders(alice(h)));
    expect(res.json).toEqual({ errcode: 'M_BAD_JSON', error: 'Unable to resolve client-server API' });
  });

  it('answers malformed JSON with M_NOT_JSON (malformed_json)', async () => {
    const h = await start();
    const res = await h.post(`${CS}/get_token`, '{not json', csHeaders(alice(h)));
    expect(res.json!.errcode).toBe('M_NOT_JSON');
  });

  it('answers GET with 405 (get_instead_of_post) and OPTIONS with CORS', async () => {
    const h = await start();
    expect((await h.request('GET', `${CS}/get_token`)).status).toBe(405);
    const opt = await h.request('OPTIONS', `${CS}/get_token`);
    expect(opt.status).toBe(200);
    expect(opt.headers.get('access-control-allow-origin')).toBe('*');
  });

  it('issues a publishing token {jwt} to a joined local user with the member object (line A, restricted_homeserver_joined_user)', async () => {
    const h = await start();
    h.hs.setJoined(ROOM, alice(h), true);
    const res = await h.post(`${CS}/get_token`, lineA(h), csHeaders(alice(h)));
    expect(res.status).toBe(200);
    expect(Object.keys(res.json!)).toEqual(['jwt']);
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
    const c = claimsOf(res.json!.jwt);
    expect(c.video.canPublish).toBe(true);
    expect(c.video.room).toBe(liveKitRoomAlias(ROOM, 'm.call#'));
  });

  it('follows publish_policy: full_access for a local user of a server without full access', async () => {
    const h = await start({ env: { BRIDGE_PUBLISH_POLICY: 'full_access' } });
    h.hs.setJoined(ROOM, alice(h), true);
    const res = await h.post(`${CS}/get_token`, lineB(h), csHeaders(alice(h)));
    expect(res.status).toBe(200);
    expect(claimsOf(res.json!.jwt).video.canPublish).toBe(false);
  });

  it('relays a remote server_name through fed_proxy and answers 502 when the destination fails (its SFU is down)', async () => {
    const h = await start();
    // alice's server is full-access there, so the destination creates the room: that fails.
    const remote = await start({ fullAccess: h.fed.serverName });
    h.hs.setJoined(ROOM, alice(h), true);
    remote.hs.setJoined(ROOM, alice(h), true);
    h.hs.addFederationDestination(remote.fed.serverName, remote.url, HS_TOKEN);
    const res = await h.post(`${CS}/get_token`, lineB(h, { server_name: remote.fed.serverName, url: remote.config.livekit.url }), csHeaders(alice(h)));
    // The remote service verifies membership, then fails CreateRoom (no SFU here): 500 → our 502.
    expect(res.status).toBe(502);
    expect(res.json).toEqual({ errcode: 'M_UNKNOWN', error: 'Unable to reach the specified homeserver' });
    const fedProxy = h.hs.requests.filter((r) => r.path.endsWith('/fed_proxy'));
    expect(fedProxy).toHaveLength(1);
    expect(fedProxy[0]!.body).toMatchObject({ destination: remote.fed.serverName, method: 'POST', path: SS, body: { user_id: alice(h), member_id: 'member-1' } });
    expect(remote.hs.requests.some((r) => r.path.endsWith('/is_joined') && r.query.mxid === alice(h))).toBe(true);
  });

  it('maps a 403 from the destination to "not a member of the room on the destination homeserver"', async () => {
    const remote = await start();
    const h = await start();
    h.hs.setJoined(ROOM, alice(h), true);
    h.hs.addFederationDestination(remote.fed.serverName, remote.url, HS_TOKEN);
    const res = await h.post(`${CS}/get_token`, lineB(h, { server_name: remote.fed.serverName, url: remote.config.livekit.url }), csHeaders(alice(h)));
    expect(res.status).toBe(403);
    expect(res.json!.error).toBe('The requesting user is not a member of the room on the destination homeserver');
  });

  it('maps a url refused by the destination to 400 M_INVALID_PARAM', async () => {
    const remote = await start();
    const h = await start();
    h.hs.setJoined(ROOM, alice(h), true);
    remote.hs.setJoined(ROOM, alice(h), true);
    h.hs.addFederationDestination(remote.fed.serverName, remote.url, HS_TOKEN);
    const res = await h.post(`${CS}/get_token`, lineB(h, { server_name: remote.fed.serverName, url: 'wss://wrong.example' }), csHeaders(alice(h)));
    expect(res.status).toBe(400);
    expect(res.json).toEqual({ errcode: 'M_INVALID_PARAM', error: 'The destination homeserver rejected the specified `url`' });
  });

  it('answers 502 when the destination cannot be reached', async () => {
    const h = await start();
    h.hs.setJoined(ROOM, alice(h), true);
    const res = await h.post(`${CS}/get_token`, lineB(h, { server_name: 'unknown.example', url: 'wss://x' }), csHeaders(alice(h)));
    expect(res.status).toBe(502);
    expect(res.json).toEqual({ errcode: 'M_UNKNOWN', error: 'Unable to reach the specified homeserver' });
  });

  it('works end to end through the homeserver proxy with a user access token', async () => {
    const h = await start();
    h.hs.setJoined(ROOM, alice(h), true);
    h.hs.setAppserviceProxy(h.url, HS_TOKEN);
    h.hs.addUserToken('alice_access_token', alice(h));
    const res = await fetch(`${h.hs.url}${CS}/get_token`, {
      method: 'POST',
      headers: { Authorization: 'Bearer alice_access_token', 'Content-Type': 'application/json' },
      body: JSON.stringify(lineB(h)),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { jwt: string };
    expect(claimsOf(body.jwt).sub).toBe(liveKitIdentityForMemberId(alice(h), 'member-1'));
  });
});

describe('S-S get_token', () => {
  const origin = 'origin.example.org';
  const ssBody = (h: TokenHarness, extra: Record<string, unknown> = {}) => ({ ...lineB(h), user_id: `@alice:${origin}`, ...extra });

  it('rejects a request without the homeserver token (missing_hs_token)', async () => {
    const h = await start();
    expect((await h.post(SS, ssBody(h), ssHeaders(origin, null))).json!.errcode).toBe('M_MISSING_TOKEN');
  });
  it('rejects a wrong homeserver token (wrong_hs_token)', async () => {
    const h = await start();
    expect((await h.post(SS, ssBody(h), ssHeaders(origin, 'nope'))).json!.errcode).toBe('M_UNKNOWN_TOKEN');
  });
  it('rejects a request without X-Matrix-Origin (missing_origin_header)', async () => {
    const h = await start();
    const res = await h.post(SS, ssBody(h), ssHeaders());
    expect(res.json).toEqual({ errcode: 'M_UNAUTHORIZED', error: 'Missing request origin' });
  });
  it('rejects an empty url (missing_url)', async () => {
    const h = await start();
    expect((await h.post(SS, ssBody(h, { url: '' }), ssHeaders(origin))).json!.errcode).toBe('M_BAD_JSON');
  });
  it('answers malformed JSON with M_NOT_JSON (malformed_json)', async () => {
    const h = await start();
    expect((await h.post(SS, '{', ssHeaders(origin))).json!.errcode).toBe('M_NOT_JSON');
  });
  it('answers GET with 405 (get_instead_of_post)', async () => {
    const h = await start();
    expect((await h.request('GET', SS)).status).toBe(405);
  });
  it('rejects a user_id of another server than the origin', async () => {
    const h = await start();
    const res = await h.post(SS, ssBody(h, { user_id: '@mallory:elsewhere.example' }), ssHeaders(origin));
    expect(res.json).toEqual({ errcode: 'M_FORBIDDEN', error: 'The user_id does not belong to the origin server' });
  });
  it('rejects a malformed user_id', async () => {
    const h = await start();
    expect((await h.post(SS, ssBody(h, { user_id: 'alice' }), ssHeaders(origin))).json!.errcode).toBe('M_INVALID_PARAM');
  });
  it('gives a user who is not in the room 403 (origin_server_not_a_member)', async () => {
    const h = await start();
    const res = await h.post(SS, ssBody(h), ssHeaders(origin));
    expect(res.status).toBe(403);
    expect(res.json!.errcode).toBe('M_FORBIDDEN');
  });
  it('rejects a url other than ours (url_mismatch)', async () => {
    const h = await start();
    h.hs.setJoined(ROOM, `@alice:${origin}`, true);
    const res = await h.post(SS, ssBody(h, { url: 'wss://other' }), ssHeaders(origin));
    expect(res.json!.errcode).toBe('M_INVALID_PARAM');
  });
  it('rejects when our client-server API is unresolvable (unresolvable_cs_api)', async () => {
    const h = await start({ env: { LIVEKIT_CS_API_URL_OVERRIDES: '' } });
    expect((await h.post(SS, ssBody(h), ssHeaders(origin))).json).toEqual({ errcode: 'M_BAD_JSON', error: 'Unable to resolve client-server API' });
  });
  it('creates no SFU room for a user of a server without full access, as the legacy endpoints do', async () => {
    const created: string[] = [];
    const h = await start({
      env: { BRIDGE_PUBLISH_POLICY: 'full_access' },
      deps: { sfu: { createRoom: async (room: string) => void created.push(room), participantExists: async () => false } },
    });
    h.hs.setJoined(ROOM, `@alice:${origin}`, true);
    const res = await h.post(SS, ssBody(h), ssHeaders(origin));
    expect(res.status).toBe(200);
    expect(claimsOf(res.json!.jwt).video.canPublish).toBe(false);
    expect(created).toEqual([]);
  });
  it('creates the SFU room for a user of a full-access server, with the grants of the legacy endpoints', async () => {
    const created: string[] = [];
    const h = await start({
      fullAccess: origin,
      deps: { sfu: { createRoom: async (room: string) => void created.push(room), participantExists: async () => false } },
    });
    h.hs.setJoined(ROOM, `@alice:${origin}`, true);
    const res = await h.post(SS, ssBody(h), ssHeaders(origin));
    expect(res.status).toBe(200);
    expect(claimsOf(res.json!.jwt).video.canPublish).toBe(true);
    expect(created).toEqual([liveKitRoomAlias(ROOM, 'm.call#')]);
  });
});

describe('C-S delegate_delayed_leave', () => {
  const body = (h: TokenHarness, extra: Record<string, unknown> = {}) => ({ ...lineB(h), delay_id: 'syd_cs_1', ...extra });
  const P = `${CS}/delegate_delayed_leave`;
  // Delegation is for users of full-access servers (grants.ts): here alice's own server.

  it('refuses a user of a server without full access with 403, as /delegate_delayed_leave does', async () => {
    const h = await startRestricted();
    h.hs.scheduleDelayedEvent({ delayId: 'syd_cs_1', roomId: ROOM, delayMs: 8000, userId: alice(h) });
    const res = await h.post(P, body(h), csHeaders(alice(h)));
    expect(res.status).toBe(403);
    expect(res.json).toEqual({ errcode: 'M_FORBIDDEN', error: 'Delegation of delayed events is only supported for full access users' });
    expect(h.hs.requests.filter((r) => r.path.includes('/delayed_events/'))).toEqual([]);
  });

  it('rejects missing and wrong homeserver tokens and a missing header', async () => {
    const h = await startFull();
    expect((await h.post(P, body(h), csHeaders(alice(h), null))).json!.errcode).toBe('M_MISSING_TOKEN');
    expect((await h.post(P, body(h), csHeaders(alice(h), 'nope'))).json!.errcode).toBe('M_UNKNOWN_TOKEN');
    expect((await h.post(P, body(h), csHeaders())).json!.errcode).toBe('M_UNAUTHORIZED');
    expect(h.hs.actions()).toEqual([]);
  });
  it('rejects url mismatch, empty url, missing fields, malformed JSON and GET', async () => {
    const h = await startFull();
    expect((await h.post(P, body(h, { url: 'wss://x' }), csHeaders(alice(h)))).json!.errcode).toBe('M_INVALID_PARAM');
    expect((await h.post(P, body(h, { url: '' }), csHeaders(alice(h)))).json!.errcode).toBe('M_BAD_JSON');
    expect((await h.post(P, body(h, { delay_id: undefined }), csHeaders(alice(h)))).json!.errcode).toBe('M_BAD_JSON');
    expect((await h.post(P, '{', csHeaders(alice(h)))).json!.errcode).toBe('M_NOT_JSON');
    expect((await h.request('GET', P)).status).toBe(405);
  });
  it('rejects when our client-server API is unresolvable (unresolvable_cs_api)', async () => {
    const h = await startFull({ env: { LIVEKIT_CS_API_URL_OVERRIDES: '' } });
    expect((await h.post(P, body(h), csHeaders(alice(h)))).json!.error).toBe('Unable to resolve client-server API');
  });
  it('looks the delay up with the as_token and asserted user, then answers {} (delay_timeout_looked_up)', async () => {
    const h = await startFull();
    h.hs.scheduleDelayedEvent({ delayId: 'syd_cs_1', roomId: ROOM, delayMs: 8000, userId: alice(h) });
    const res = await h.post(P, body(h), csHeaders(alice(h)));
    expect(res.status).toBe(200);
    expect(res.json).toEqual({});
    const lookups = h.hs.requests.filter((r) => r.method === 'GET' && r.path.endsWith('/delayed_events/syd_cs_1'));
    expect(lookups).toHaveLength(1);
    expect(lookups[0]!.authorization).toBe(`Bearer ${AS_TOKEN}`);
    expect(lookups[0]!.query.user_id).toBe(alice(h));
  });
  it('rejects an unknown delay_id (unknown_delay_id_rejected)', async () => {
    const h = await startFull();
    const res = await h.post(P, body(h), csHeaders(alice(h)));
    expect(res.json).toEqual({ errcode: 'M_INVALID_PARAM', error: 'Unknown `delay_id`' });
    expect(h.hs.actions()).toEqual([]);
  });
  it('rejects a delay_id of another room (delay_id_for_another_room_rejected)', async () => {
    const h = await startFull();
    h.hs.scheduleDelayedEvent({ delayId: 'syd_cs_1', roomId: '!other:example.com', delayMs: 300, userId: alice(h) });
    expect((await h.post(P, body(h), csHeaders(alice(h)))).json!.error).toBe('Unknown `delay_id`');
  });
  it('answers 503 when the look-up fails with 5xx', async () => {
    const h = await startFull();
    h.hs.setLookupFailure(502);
    const res = await h.post(P, body(h), csHeaders(alice(h)));
    expect(res.status).toBe(503);
    expect(res.json).toEqual({ errcode: 'M_UNKNOWN', error: 'Unable to look up the delayed event' });
  });
  it('drives the job from the looked-up delay (looked_up_delay_drives_the_job)', async () => {
    const h = await startFull();
    h.hs.scheduleDelayedEvent({ delayId: 'syd_cs_1', roomId: ROOM, delayMs: 300, userId: alice(h) });
    expect((await h.post(P, body(h), csHeaders(alice(h)))).status).toBe(200);
    await waitFor('send', () => h.hs.actions().includes('syd_cs_1:send') || undefined);
  });
  it('restarts and sends with the as_token and ?user_id (restart_and_send_use_identity_assertion)', async () => {
    const h = await startFull();
    h.hs.scheduleDelayedEvent({ delayId: 'syd_cs_1', roomId: ROOM, delayMs: 8000, userId: alice(h) });
    expect((await h.post(P, body(h), csHeaders(alice(h)))).status).toBe(200);
    const room = liveKitRoomAlias(ROOM, 'm.call#');
    const identity = liveKitIdentityForMemberId(alice(h), 'member-1');
    await h.webhook('participant_joined', room, identity);
    await waitFor('restart', () => h.hs.actions().includes('syd_cs_1:restart') || undefined);
    await h.webhook('participant_left', room, identity, true);
    await waitFor('send', () => h.hs.actions().includes('syd_cs_1:send') || undefined);
    const calls = h.hs.requests.filter((r) => r.method === 'POST' && r.path.includes('/delayed_events/syd_cs_1/'));
    expect(calls.map((c) => [c.authorization, c.query.user_id])).toEqual([
      [`Bearer ${AS_TOKEN}`, alice(h)],
      [`Bearer ${AS_TOKEN}`, alice(h)],
    ]);
  });
});

describe('both MSC4195 body shapes on every proxied endpoint', () => {
  const origin = 'origin.example.org';
  /** Element Call (js-sdk) sends `member: {id, claimed_device_id}`; lk-jwt-service line B sends `member_id`. */
  const shapes = [
    ['member_id', { member_id: 'member-1' }, (u: string) => liveKitIdentityForMemberId(u, 'member-1')],
    ['member {id, claimed_device_id}', { member: { id: 'member-1', claimed_device_id: 'DEVICE' } }, (u: string) => liveKitIdentityForMember(u, 'DEVICE', 'member-1')],
    ['member {id, claimed_user_id, claimed_device_id}', { member: { id: 'member-1', claimed_user_id: '@ignored:elsewhere', claimed_device_id: 'DEVICE' } }, (u: string) => liveKitIdentityForMember(u, 'DEVICE', 'member-1')],
  ] as const;
  const shapeless = (h: TokenHarness) => ({ url: h.config.livekit.url, room_id: ROOM, slot_id: 'm.call#' });

  it.each(shapes)('C-S get_token accepts %s and names the participant by it', async (_name, part, identity) => {
    const h = await start();
    h.hs.setJoined(ROOM, alice(h), true);
    const res = await h.post(`${CS}/get_token`, { ...shapeless(h), ...part }, csHeaders(alice(h)));
    expect(res.status).toBe(200);
    expect(claimsOf(res.json!.jwt).sub).toBe(identity(alice(h)));
  });
  // S-S always creates the SFU room: it needs an SFU to answer CreateRoom.
  let sfu: TestSfu;
  beforeAll(async () => {
    sfu = await startTestSfu();
  });
  afterAll(async () => {
    await sfu.stop();
  });
  it.each(shapes)('S-S get_token accepts %s and names the participant by it', async (_name, part, identity) => {
    const h = await start({ livekitUrl: sfu.wsUrl, env: { LIVEKIT_KEY: TEST_API_KEY, LIVEKIT_SECRET: TEST_API_SECRET } });
    const user = `@alice:${origin}`;
    h.hs.setJoined(ROOM, user, true);
    const res = await h.post(SS, { ...shapeless(h), user_id: user, ...part }, ssHeaders(origin));
    expect(res.status).toBe(200);
    expect(claimsOf(res.json!.jwt).sub).toBe(identity(user));
  });
  it.each(shapes)('delegate_delayed_leave accepts %s and sends the delayed leave when that participant leaves', async (_name, part, identity) => {
    // Delegation is for users of full-access servers: the harness default, alice's own.
    const h = await start({ fullAccess: undefined });
    h.hs.scheduleDelayedEvent({ delayId: 'syd_shape', roomId: ROOM, delayMs: 8000, userId: alice(h) });
    const res = await h.post(`${CS}/delegate_delayed_leave`, { ...shapeless(h), delay_id: 'syd_shape', ...part }, csHeaders(alice(h)));
    expect(res.status).toBe(200);
    await h.webhook('participant_left', liveKitRoomAlias(ROOM, 'm.call#'), identity(alice(h)), true);
    await waitFor('send', () => h.hs.actions().includes('syd_shape:send') || undefined);
  });
  it.each([
    ['neither member_id nor member', {}],
    ['a member without claimed_device_id', { member: { id: 'member-1' } }],
    ['a member without id', { member: { claimed_device_id: 'DEVICE' } }],
    ['an empty member_id', { member_id: '' }],
  ])('C-S get_token refuses a body with %s (M_BAD_JSON)', async (_name, part) => {
    const h = await start();
    h.hs.setJoined(ROOM, alice(h), true);
    const res = await h.post(`${CS}/get_token`, { ...shapeless(h), ...part }, csHeaders(alice(h)));
    expect(res.status).toBe(400);
    expect(res.json).toEqual({ errcode: 'M_BAD_JSON', error: 'The request body is missing `member_id` or a `member` with `id` and `claimed_device_id`' });
  });
});
