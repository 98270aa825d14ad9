/**
 * lk-jwt-service's OpenID endpoints, end to end over HTTP against the real token service and the
 * fake homeserver (TLS userinfo, client-server API): validation order and texts, CORS, 405/404,
 * claims, the membership check and the documented difference (unknown fields are ignored).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { liveKitIdentityForMember, liveKitRoomAlias } from '../../bridge/token/names.ts';
import { claimsOf, LK_KEY, startTokenHarness, type TokenHarness, type TokenHarnessOptions } from './token-harness.ts';

const ROOM = '!room:example.com';
const running: TokenHarness[] = [];
afterEach(async () => {
  for (const h of running.splice(0)) await h.stop();
});
async function start(opts: TokenHarnessOptions = {}): Promise<TokenHarness> {
  const h = await startTokenHarness(opts);
  running.push(h);
  return h;
}

function getTokenBody(u: { userId: string; openid: Record<string, unknown> }, extra: Record<string, unknown> = {}) {
  return {
    room_id: ROOM,
    slot_id: 'm.call#ROOM',
    openid_token: u.openid,
    member: { id: 'member-1', claimed_user_id: u.userId, claimed_device_id: 'DEVICE' },
    ...extra,
  };
}
function sfuGetBody(u: { openid: Record<string, unknown> }, extra: Record<string, unknown> = {}) {
  return { room: ROOM, openid_token: u.openid, device_id: 'DEVICE', ...extra };
}
const CORS = {
  'content-type': 'application/json',
  'access-control-allow-origin': '*',
  'access-control-allow-methods': 'POST',
  'access-control-allow-headers': 'Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token',
};
function expectCors(headers: Headers) {
  for (const [k, v] of Object.entries(CORS)) expect(headers.get(k), k).toBe(v);
}

// Restricted (not full-access) keeps these tests independent of the SFU: no room creation.
const restricted = { fullAccess: 'trusted.example.com' };

describe('POST /get_token', () => {
  it('issues a token with lk-jwt-service claims to a joined remote user (remote_token)', async () => {
    const h = await start(restricted);
    const u = h.user('alice', { joinedTo: [ROOM] });
    const res = await h.post('/get_token', getTokenBody(u));
    expect(res.status).toBe(200);
    expect(res.text.endsWith('}\n')).toBe(true);
    expectCors(res.headers);
    expect(Object.keys(res.json!).toSorted()).toEqual(['jwt', 'url']);
    expect(res.json!.url).toBe(h.config.livekit.url);
    const c = claimsOf(res.json!.jwt);
    const identity = liveKitIdentityForMember(u.userId, 'DEVICE', 'member-1');
    expect(c.iss).toBe(LK_KEY);
    expect(c.sub).toBe(identity);
    expect(c.identity).toBe(identity);
    expect(c.nbf).toBe(c.iat);
    expect(c.exp).toBe((c.iat as number) + 3600);
    expect(c.video).toEqual({
      roomJoin: true,
      room: liveKitRoomAlias(ROOM, 'm.call#ROOM'),
      canPublish: true,
      canSubscribe: true,
      canUpdateOwnMetadata: true,
    });
  });

  it('lets only full-access users publish under publish_policy full_access', async () => {
    const h = await start({ ...restricted, env: { BRIDGE_PUBLISH_POLICY: 'full_access' } });
    const u = h.user('alice', { joinedTo: [ROOM] });
    const res = await h.post('/get_token', getTokenBody(u));
    expect(res.status).toBe(200);
    expect(claimsOf(res.json!.jwt).video.canPublish).toBe(false);
  });

  it('rejects an unknown OpenID token with 401 M_UNAUTHORIZED (unknown_token)', async () => {
    const h = await start(restricted);
    const u = h.user('alice', { joinedTo: [ROOM] });
    h.fed.revokeOpenIdToken(String(u.openid.access_token));
    const res = await h.post('/get_token', getTokenBody(u));
    expect(res.status).toBe(401);
    expect(res.json).toEqual({ errcode: 'M_UNAUTHORIZED', error: 'The request could not be authorised.' });
    expectCors(res.headers);
  });

  it('rejects a claimed user other than the OpenID subject (claimed_user_mismatch)', async () => {
    const h = await start(restricted);
    const u = h.user('alice', { joinedTo: [ROOM] });
    const res = await h.post('/get_token', getTokenBody({ ...u, userId: `@mallory:${h.fed.serverName}` }));
    expect(res.status).toBe(401);
    expect(res.json!.errcode).toBe('M_UNAUTHORIZED');
  });

  it('rejects a subject from another server than matrix_server_name', async () => {
    const h = await start(restricted);
    const u = h.user('alice', { joinedTo: [ROOM] });
    h.fed.setUserInfoAnswer(String(u.openid.access_token), { status: 200, body: { sub: '@alice:evil.example' } });
    const res = await h.post('/get_token', getTokenBody({ ...u, userId: '@alice:evil.example' }));
    expect(res.status).toBe(401);
  });

  it('refuses delegation to a restricted homeserver (restricted_homeserver)', async () => {
    const h = await start(restricted);
    const u = h.user('alice', { joinedTo: [ROOM] });
    const res = await h.post('/get_token', getTokenBody(u, { delay_id: 'syd_x', delay_timeout: 5000 }));
    expect(res.status).toBe(400);
    expect(res.json).toEqual({ errcode: 'M_BAD_JSON', error: 'Delegation of delayed events is only supported for full access users' });
  });

  it('rejects delegation when the client-server API cannot be resolved (unresolvable_cs_api)', async () => {
    const h = await start({ env: { LIVEKIT_CS_API_URL_OVERRIDES: '' }, membershipCheck: false, appservice: false });
    const u = h.user('alice', { joinedTo: [ROOM] });
    const res = await h.post('/get_token', getTokenBody(u, { delay_id: 'syd_x', delay_timeout: 5000 }));
    expect(res.status).toBe(400);
    expect(res.json).toEqual({ errcode: 'M_BAD_JSON', error: 'Unable to resolve client-server API' });
  });

  it.each([
    [{ delay_id: 'syd_x' }],
    [{ delay_timeout: 5000 }],
    [{ delay_id: 'syd_x', delay_timeout: -1 }],
  ])('rejects partial delay parameters %j (partial_delay_params)', async (extra) => {
    const h = await start(restricted);
    const u = h.user('alice', { joinedTo: [ROOM] });
    const res = await h.post('/get_token', getTokenBody(u, extra));
    expect(res.status).toBe(400);
    expect(res.json).toEqual({ errcode: 'M_BAD_JSON', error: 'The request body is missing `delay_id` or `delay_timeout`' });
  });

  it.each([
    ['{not json'],
    [''],
    ['[]'],
    ['{"room_id": 5}'],
    ['{"openid_token": {"expires_in": "soon"}}'],
    ['{"member": []}'],
  ])('answers 400 M_NOT_JSON "Error reading request" to %j (malformed_json)', async (raw) => {
    const h = await start(restricted);
    const res = await h.post('/get_token', raw);
    expect(res.status).toBe(400);
    expect(res.json).toEqual({ errcode: 'M_NOT_JSON', error: 'Error reading request' });
    expectCors(res.headers);
  });

  it('checks fields in the reference order with verbatim texts', async () => {
    const h = await start(restricted);
    const u = h.user('alice', { joinedTo: [ROOM] });
    const cases: [Record<string, unknown>, string][] = [
      [{ ...getTokenBody(u), slot_id: '' }, 'The request body is missing `room_id` or `slot_id`'],
      [{ ...getTokenBody(u), room_id: undefined, member: {} }, 'The request body is missing `room_id` or `slot_id`'],
      [{ ...getTokenBody(u), member: { id: 'm' } }, 'The request body `member` is missing a `id`, `claimed_user_id` or `claimed_device_id`'],
      [
        { ...getTokenBody(u), openid_token: { access_token: 'x' } },
        'The request body `openid_token` is missing a `access_token` or `matrix_server_name`',
      ],
    ];
    for (const [body, error] of cases) {
      const res = await h.post('/get_token', body);
      expect(res.status).toBe(400);
      expect(res.json).toEqual({ errcode: 'M_BAD_JSON', error });
    }
  });

  it('ignores unknown fields at any depth (documented difference from lk-jwt-service)', async () => {
    const h = await start(restricted);
    const u = h.user('alice', { joinedTo: [ROOM] });
    const body = getTokenBody(u, { future_field: { x: 1 } });
    (body.openid_token as Record<string, unknown>) = { ...u.openid, brand_new: true };
    (body.member as Record<string, unknown>).extra = 'y';
    const res = await h.post('/get_token', body);
    expect(res.status).toBe(200);
  });

  it('answers GET with 405 and the CORS headers (get_instead_of_post)', async () => {
    const h = await start(restricted);
    const res = await h.request('GET', '/get_token');
    expect(res.status).toBe(405);
    expect(res.text).toBe('');
    expectCors(res.headers);
  });

  it('answers OPTIONS with 200 and the CORS headers', async () => {
    const h = await start(restricted);
    const res = await h.request('OPTIONS', '/get_token');
    expect(res.status).toBe(200);
    expectCors(res.headers);
  });

  it('answers 500 "Unable to create room on SFU" for a full-access user when the SFU is unreachable', async () => {
    const h = await start();
    const u = h.user('alice', { joinedTo: [ROOM] });
    const res = await h.post('/get_token', getTokenBody(u));
    expect(res.status).toBe(500);
    expect(res.json).toEqual({ errcode: 'M_UNKNOWN', error: 'Unable to create room on SFU' });
  });
});

describe('POST /sfu/get', () => {
  it('issues a token for the legacy room and the plain user:device identity', async () => {
    const h = await start(restricted);
    const u = h.user('alice', { joinedTo: [ROOM] });
    const res = await h.post('/sfu/get', sfuGetBody(u));
    expect(res.status).toBe(200);
    const c = claimsOf(res.json!.jwt);
    expect(c.sub).toBe(`${u.userId}:DEVICE`);
    expect(c.video.room).toBe(liveKitRoomAlias(ROOM, 'm.call#ROOM'));
  });

  it('accepts exactly what Element Call sends (recorded request)', async () => {
    const h = await start(restricted);
    const u = h.user('alice', { joinedTo: ['!SDzBAImFdwOuXNfkSU:localhost'] });
    const res = await h.post('/sfu/get', { room: '!SDzBAImFdwOuXNfkSU:localhost', openid_token: u.openid, device_id: 'BKZJRNQWUX' });
    expect(res.status).toBe(200);
  });

  it('rejects an unknown OpenID token (unknown_token)', async () => {
    const h = await start(restricted);
    const res = await h.post('/sfu/get', sfuGetBody({ openid: { access_token: 'nope', matrix_server_name: h.fed.serverName } }));
    expect(res.status).toBe(401);
    expect(res.json!.errcode).toBe('M_UNAUTHORIZED');
  });

  it('refuses delegation to a restricted homeserver (restricted_homeserver)', async () => {
    const h = await start(restricted);
    const u = h.user('alice', { joinedTo: [ROOM] });
    const res = await h.post('/sfu/get', sfuGetBody(u, { delay_id: 'syd_x', delay_timeout: 5000 }));
    expect(res.status).toBe(400);
    expect(res.json!.error).toBe('Delegation of delayed events is only supported for full access users');
  });

  it('rejects delegation when the client-server API cannot be resolved (unresolvable_cs_api)', async () => {
    const h = await start({ env: { LIVEKIT_CS_API_URL_OVERRIDES: '' }, membershipCheck: false, appservice: false });
    const u = h.user('alice', { joinedTo: [ROOM] });
    const res = await h.post('/sfu/get', sfuGetBody(u, { delay_id: 'syd_x', delay_timeout: 5000 }));
    expect(res.json).toEqual({ errcode: 'M_BAD_JSON', error: 'Unable to resolve client-server API' });
  });

  it('rejects partial delay parameters (partial_delay_params)', async () => {
    const h = await start(restricted);
    const u = h.user('alice', { joinedTo: [ROOM] });
    const res = await h.post('/sfu/get', sfuGetBody(u, { delay_timeout: 10 }));
    expect(res.json).toEqual({ errcode: 'M_BAD_JSON', error: 'The request body is missing `delay_id` or `delay_timeout`' });
  });

  it('checks room and OpenID parameters with the legacy texts', async () => {
    const h = await start(restricted);
    const u = h.user('alice', { joinedTo: [ROOM] });
    expect((await h.post('/sfu/get', sfuGetBody(u, { room: '' }))).json).toEqual({ errcode: 'M_BAD_JSON', error: 'Missing room parameter' });
    expect((await h.post('/sfu/get', sfuGetBody({ openid: {} }))).json).toEqual({
      errcode: 'M_BAD_JSON',
      error: 'Missing OpenID token parameters',
    });
  });

  it('answers malformed JSON with M_NOT_JSON (malformed_json)', async () => {
    const h = await start(restricted);
    const res = await h.post('/sfu/get', '{"room":');
    expect(res.json).toEqual({ errcode: 'M_NOT_JSON', error: 'Error reading request' });
  });

  it('answers GET with 405 (get_instead_of_post)', async () => {
    const h = await start(restricted);
    const res = await h.request('GET', '/sfu/get');
    expect(res.status).toBe(405);
    expectCors(res.headers);
  });
});

describe('membership check', () => {
  it('gives a user who is not in the Matrix room 403 on /sfu/get and /get_token', async () => {
    const h = await start(restricted);
    const u = h.user('eve');
    for (const [path, body] of [
      ['/sfu/get', sfuGetBody(u)],
      ['/get_token', getTokenBody(u)],
    ] as const) {
      const res = await h.post(path, body);
      expect(res.status, path).toBe(403);
      expect(res.json).toEqual({ errcode: 'M_FORBIDDEN', error: 'The requesting user is not a member of the room' });
      expectCors(res.headers);
    }
  });

  it('answers 502 when membership cannot be verified', async () => {
    const h = await start(restricted);
    const u = h.user('alice', { joinedTo: [ROOM] });
    h.hs.setIsJoinedFailure(500);
    const res = await h.post('/get_token', getTokenBody(u));
    expect(res.status).toBe(502);
    expect(res.json).toEqual({ errcode: 'M_UNKNOWN', error: 'Unable to verify room membership' });
  });

  it('falls back to joined_members on a homeserver without MSC4502', async () => {
    const h = await start(restricted);
    h.hs.setMsc4502(false);
    const alice = h.user('alice', { joinedTo: [ROOM] });
    const eve = h.user('eve');
    expect((await h.post('/get_token', getTokenBody(alice))).status).toBe(200);
    expect((await h.post('/get_token', getTokenBody(eve))).status).toBe(403);
    expect(h.hs.requests.some((r) => r.path.endsWith('/joined_members'))).toBe(true);
  });

  it("trusts the appservice's tracked joins, and asks the homeserver when the user is unknown or tracked as not joined", async () => {
    // Element Call asks for a token right after joining the room, so a tracked leave or invite
    // may be older than the join whose push has not arrived yet: only "joined" is final.
    const known = new Map([
      [`${ROOM}|@bob`, false],
      [`${ROOM}|@eve`, false],
    ]);
    const h = await start({
      ...restricted,
      deps: {
        membershipOracle: {
          isJoined: async (room, user) => (user.startsWith('@alice') ? true : known.get(`${room}|${user.split(':')[0]}`)),
        },
      },
    });
    const alice = h.user('alice');
    const bob = h.user('bob', { joinedTo: [ROOM] });
    const carol = h.user('carol', { joinedTo: [ROOM] });
    const eve = h.user('eve');
    const asked = () => h.hs.requests.filter((r) => r.path.includes('is_joined')).length;
    expect((await h.post('/get_token', getTokenBody(alice))).status).toBe(200);
    expect(asked()).toBe(0);
    expect((await h.post('/get_token', getTokenBody(bob))).status).toBe(200);
    expect(asked()).toBe(1);
    expect((await h.post('/get_token', getTokenBody(carol))).status).toBe(200);
    expect(asked()).toBe(2);
    expect((await h.post('/get_token', getTokenBody(eve))).status).toBe(403);
    expect(asked()).toBe(3);
  });

  it('issues tokens to non-members when membership_check is off', async () => {
    const h = await start({ ...restricted, membershipCheck: false, appservice: false });
    const u = h.user('eve');
    expect((await h.post('/get_token', getTokenBody(u))).status).toBe(200);
    expect((await h.post('/sfu/get', sfuGetBody(u))).status).toBe(200);
  });
});

describe('routing', () => {
  it('answers unknown paths with Go\'s "404 page not found"', async () => {
    const h = await start(restricted);
    const res = await h.request('POST', '/nope');
    expect(res.status).toBe(404);
    expect(res.text).toBe('404 page not found\n');
    expect(res.headers.get('content-type')).toBe('text/plain; charset=utf-8');
  });

  it('serves /healthz to GET and HEAD and 405 otherwise', async () => {
    const h = await start(restricted);
    expect((await h.request('GET', '/healthz')).status).toBe(200);
    expect((await h.request('HEAD', '/healthz')).status).toBe(200);
    expect((await h.request('POST', '/healthz')).status).toBe(405);
  });

  // Unlike lk-jwt-service (200 to everything), /sfu_webhook refuses what is not a signed POST:
  // test/integration/sfu-webhook.test.ts covers it.
  it('answers an unsigned /sfu_webhook POST 401 and a GET 405, with empty bodies', async () => {
    const h = await start(restricted);
    const res = await h.request('POST', '/sfu_webhook', { body: '{"event":"participant_joined"}', headers: { Authorization: 'bogus' } });
    expect(res.status).toBe(401);
    expect(res.text).toBe('');
    expect((await h.request('GET', '/sfu_webhook')).status).toBe(405);
  });
});
