/**
 * No secret reaches a log line. Runs a representative flow through our two processes with both
 * loggers at `trace` and captured: the homeserver pushes transactions with the hs_token
 * (Authorization header) and one arrives with a wrong token in the legacy `access_token` query;
 * a user gets a LiveKit token from `/get_token` with an OpenID token and a delegated delayed
 * leave (the bridge then calls the homeserver with the as_token); a bad OpenID token is refused;
 * RoomService calls carry JWTs, one signed with a wrong secret; an rtc-node participant joins
 * with its JWT in the signalling URL and leaves, which the SFU reports to the bridge by signed
 * webhooks. Every captured line is then searched for the API secret, hs_token, as_token, the
 * user's access token, the OpenID tokens, the LiveKit JWT, and anything shaped like a JWT.
 */
import { AccessToken, RoomServiceClient } from 'livekit-server-sdk';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.ts';
import { captureLogs } from '../support/log-stream.ts';
import { TEST_API_KEY, TEST_API_SECRET } from '../support/sfu-harness.ts';
import { waitFor } from '../support/wait.ts';
import { CALL, joinContent, SLOT, startWorld, stateKeyOf, type World } from './bridge-e2e-world.ts';

let world: World | undefined;
afterEach(async () => {
  await world?.stop();
  world = undefined;
});

const JWT_SHAPE = /eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}/;

describe('secrets in logs', () => {
  it('writes none of the secrets, tokens or JWTs used in a full bridge + SFU flow', async () => {
    const bridgeLogs = captureLogs();
    const sfuLogs = captureLogs();
    const w = (world = await startWorld({
      kind: 'memory',
      fullAccess: true,
      csApi: 'core',
      loggers: {
        bridge: createLogger({ name: 'bridge', level: 'trace', destination: bridgeLogs.stream }),
        sfu: createLogger({ name: 'sfu', level: 'trace', destination: sfuLogs.stream }),
      },
    }));
    const hs = w.composed.hs;
    const secrets: Record<string, string> = {
      'API secret': TEST_API_SECRET,
      hs_token: w.reg.hs_token,
      as_token: w.reg.as_token,
      'access token': w.accessToken(w.alice),
    };

    // Transactions pushed with the hs_token; one with a wrong token in the query.
    const key = stateKeyOf(w.alice, 'DEVICEA');
    await w.pushed(hs.model.sendState(w.alice, w.roomId, CALL, key, joinContent('DEVICEA', w.alice)));
    const wrongHsToken = 'wrong_hs_token_0123456789abcdef';
    secrets['wrong hs_token'] = wrongHsToken;
    const refused = await fetch(`${w.bridgeUrl}/_matrix/app/v1/transactions/t1?access_token=${wrongHsToken}`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json' },
      body: '{"events":[]}',
    });
    expect(refused.status).toBe(403);

    // A delayed leave scheduled by the user, then /get_token with OpenID and the delegation.
    const statePath = `/_matrix/client/v3/rooms/${encodeURIComponent(w.roomId)}/state/${CALL}/${encodeURIComponent(key)}`;
    const delayed = await fetch(`${hs.url}${statePath}?org.matrix.msc4140.delay=2000`, {
      method: 'PUT',
      headers: { Authorization: `Bearer ${w.accessToken(w.alice)}`, 'Content-Type': 'application/json' },
      body: '{}',
    });
    const delayId = ((await delayed.json()) as { delay_id: string }).delay_id;
    const openId = await w.openId(w.alice);
    secrets['OpenID token'] = String(openId.access_token);
    const tokenRes = await fetch(`${w.bridgeUrl}/get_token`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        room_id: w.roomId,
        slot_id: SLOT,
        openid_token: openId,
        member: { id: `${w.alice}:DEVICEA`, claimed_user_id: w.alice, claimed_device_id: 'DEVICEA' },
        delay_id: delayId,
        delay_timeout: 2000,
      }),
    });
    expect(tokenRes.status).toBe(200);
    const jwt = String(((await tokenRes.json()) as { jwt: string }).jwt);
    secrets['LiveKit JWT'] = jwt;

    // A forged OpenID token is refused.
    const badOpenId = { ...(await w.openId(w.bob)), access_token: 'forged_openid_token_0123456789' };
    secrets['forged OpenID token'] = badOpenId.access_token;
    const bad = await fetch(`${w.bridgeUrl}/sfu/get`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ room: w.roomId, openid_token: badOpenId, device_id: 'DEVICEB' }),
    });
    expect(bad.status).toBe(401);

    // RoomService with a good JWT and with one signed by a wrong secret.
    expect(await w.sfuRooms()).toContain(w.sfuRoom);
    const wrongSecret = 'wrong-secret-0123456789abcdef-0123456789';
    secrets['wrong API secret'] = wrongSecret;
    const forged = new AccessToken(TEST_API_KEY, wrongSecret, { ttl: '5m' });
    forged.addGrant({ roomList: true });
    const forgedJwt = await forged.toJwt();
    secrets['forged RoomService JWT'] = forgedJwt;
    const forgedRes = await fetch(`${w.sfu.url}/twirp/livekit.RoomService/ListRooms`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${forgedJwt}` },
      body: '{}',
    });
    expect(forgedRes.status).toBe(401);
    await new RoomServiceClient(w.sfu.url, TEST_API_KEY, TEST_API_SECRET).listParticipants(w.sfuRoom);

    // A participant joins with the JWT in the signalling URL and leaves: webhooks to the bridge.
    const client = await w.connect(jwt);
    await waitFor('alice in the SFU room', async () => (await w.sfuIdentities(w.sfuRoom)).length === 1);
    await client.disconnect();
    await waitFor('the delegated delayed leave sent after the webhook', () =>
      w.coreRequests.some((r) => r.path.includes(`/delayed_events/${delayId}`) && (r.body as { action?: string } | undefined)?.action === 'send'),
    { timeoutMs: 10_000 });
    await w.stop();
    world = undefined;

    const lines = [...bridgeLogs.text().split('\n'), ...sfuLogs.text().split('\n')].filter(Boolean);
    expect(lines.length).toBeGreaterThan(20); // the flow was logged, at trace level
    for (const [what, secret] of Object.entries(secrets)) {
      expect(secret.length, what).toBeGreaterThan(8);
      expect(lines.filter((l) => l.includes(secret)), what).toEqual([]);
    }
    expect(lines.filter((l) => JWT_SHAPE.test(l))).toEqual([]);
  });
});
