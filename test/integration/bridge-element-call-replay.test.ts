/**
 * Element Call's recorded order of requests (fixtures/element-call/run1-timeline.txt, against
 * Synapse 1.132 in compatibility mode) replayed against the whole bridge and the fake homeserver
 * in its 1.132 profile: `/rtc/transports` answers 404 M_UNRECOGNIZED, so the client takes its
 * config's service; two `/sfu/get` in parallel before the membership exists; the delayed `{}`
 * leave, the join; two `/sfu/get` in parallel again with `delay_id`, `delay_timeout` and
 * `delay_cs_api_url`; the client's own heartbeat gets Synapse 1.132's 404 / 401 / 200 (path
 * form unknown, body form needs a user, as the user it works). The doubled requests get the same
 * participant, one delayed-leave job (keyed by room and identity) keeps the delayed event alive
 * as the user (as_token + `?user_id=`), and the participant's disconnect sends the leave exactly
 * once. Memory store: the store is not
 * what this is about (bridge-e2e.test.ts runs the same machinery on Redis).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { legacyLiveKitIdentity } from '../../bridge/token/names.ts';
import { RTC_TRANSPORTS_PATH } from '../fake-homeserver/matrix-rtc.ts';
import { claimsOf } from './token-harness.ts';
import { waitFor } from '../support/wait.ts';
import { CALL, joinContent, startWorld, stateKeyOf, type World } from './bridge-e2e-world.ts';

let current: World | undefined;
afterEach(async () => {
  await current?.stop();
  current = undefined;
});

const MSC4140 = '/_matrix/client/unstable/org.matrix.msc4140';

describe('Element Call`s recorded request order on Synapse 1.132, replayed against the bridge', () => {
  it('answers the doubled /sfu/get alike, keeps one delayed-leave job alive through 404/401/200 and sends the leave once on disconnect', async () => {
    // Delegation is for full-access homeservers only (lk-jwt-service: 400 M_BAD_JSON otherwise).
    const w = (current = await startWorld({ kind: 'memory', csApi: 'core', fullAccess: true }));
    const hs = w.composed.hs;
    const token = w.accessToken(w.alice);
    const asAlice = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`${hs.url}${path}`, {
        method,
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: res.status, json: (await res.json()) as Record<string, unknown> };
    };
    const sfuGet = async (extra: Record<string, unknown> = {}) => {
      const res = await fetch(`${w.bridgeUrl}/sfu/get`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ room: w.roomId, openid_token: await w.openId(w.alice), device_id: 'DEVICEA', ...extra }),
      });
      return { status: res.status, json: (await res.json()) as Record<string, unknown> };
    };

    // 1. Transport discovery: Synapse 1.132 does not know the endpoint.
    expect(await asAlice('GET', RTC_TRANSPORTS_PATH)).toEqual({ status: 404, json: { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' } });

    // 2. Two /sfu/get at once, before any call membership exists.
    const first = await Promise.all([sfuGet(), sfuGet()]);
    expect(first.map((r) => r.status)).toEqual([200, 200]);
    const identity = legacyLiveKitIdentity(w.alice, 'DEVICEA');
    expect(first.map((r) => claimsOf(r.json.jwt).sub)).toEqual([identity, identity]);
    expect(first.map((r) => claimsOf(r.json.jwt).video.room)).toEqual([w.sfuRoom, w.sfuRoom]);

    // 3. The delayed leave, then the join.
    const key = stateKeyOf(w.alice, 'DEVICEA');
    const statePath = `/_matrix/client/v3/rooms/${encodeURIComponent(w.roomId)}/state/${CALL}/${encodeURIComponent(key)}`;
    const delayMs = 2_000;
    const delayed = await asAlice('PUT', `${statePath}?org.matrix.msc4140.delay=${delayMs}`, {});
    expect(delayed.status).toBe(200);
    const delayId = String(delayed.json.delay_id);
    const joined = await asAlice('PUT', statePath, joinContent('DEVICEA', w.alice));
    await w.pushed(String(joined.json.event_id));

    // 4. Two /sfu/get at once again, now delegating the delayed leave.
    const second = await Promise.all([0, 1].map(() => sfuGet({ delay_id: delayId, delay_timeout: delayMs, delay_cs_api_url: hs.url })));
    expect(second.map((r) => r.status)).toEqual([200, 200]);
    expect(second.map((r) => claimsOf(r.json.jwt).sub)).toEqual([identity, identity]);
    const client = await w.connect(String(second[0]!.json.jwt));

    // 5. Element Call's own heartbeat, as recorded: path form 404, body form without a token 401,
    //    with the user's token 200.
    const heartbeat = async (path: string, auth: boolean) => {
      const res = await fetch(`${hs.url}${MSC4140}/delayed_events/${delayId}${path}`, {
        method: 'POST',
        headers: { ...(auth ? { Authorization: `Bearer ${token}` } : {}), 'Content-Type': 'application/json' },
        body: JSON.stringify(path ? {} : { action: 'restart' }),
      });
      return { status: res.status, errcode: ((await res.json()) as { errcode?: string }).errcode };
    };
    expect(await heartbeat('/restart', false)).toEqual({ status: 404, errcode: 'M_UNRECOGNIZED' });
    expect(await heartbeat('', false)).toEqual({ status: 401, errcode: 'M_MISSING_TOKEN' });
    expect(await heartbeat('', true)).toEqual({ status: 200, errcode: undefined });

    // 6. Connected: the bridge keeps the delayed leave alive past its delay, as the user.
    const fromBridge = (r: { authorization?: string }) => r.authorization === `Bearer ${w.reg.as_token}`;
    const delayedCalls = () => w.coreRequests.filter((r) => r.method === 'POST' && r.path.startsWith(`${MSC4140}/delayed_events/${delayId}`) && fromBridge(r));
    const lastClientRestart = Date.now();
    await waitFor('the bridge restarts it as alice, and it outlives its delay', () =>
      delayedCalls().some((r) => (r.body as { action?: string }).action === 'restart' && r.query.user_id === w.alice) &&
      Date.now() > lastClientRestart + 1.5 * delayMs &&
      hs.delayed.pendingIds().includes(delayId), { timeoutMs: 10_000, intervalMs: 50 });
    expect(hs.model.stateEvent(w.roomId, CALL, key)?.content).toMatchObject({ device_id: 'DEVICEA' });

    // 7. The tab goes away: the leave is sent once, by one job.
    await client.disconnect();
    await waitFor('membership ended by the delayed leave', () => Object.keys(hs.model.stateEvent(w.roomId, CALL, key)?.content ?? { x: 1 }).length === 0, { timeoutMs: 5_000 });
    expect(delayedCalls().filter((r) => (r.body as { action?: string }).action === 'send')).toHaveLength(1);
    // The path form is asked at most once per homeserver (404 M_UNRECOGNIZED on 1.132).
    expect(delayedCalls().filter((r) => /\/(restart|send)$/.test(r.path)).length).toBeLessThanOrEqual(1);
  });
});
