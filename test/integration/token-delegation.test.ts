/**
 * Delegated delayed leave end to end (lk-jwt-service's lifecycle scenarios): `/delegate_delayed_leave`
 * registers a job, signed LiveKit webhooks drive it, and the fake homeserver records the
 * restart/send calls it receives and answers them as scripted (200/404/429/500).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { liveKitIdentityForMember, liveKitRoomAlias } from '../../bridge/token/names.ts';
import { waitFor } from '../support/wait.ts';
import { startTokenHarness, type TokenHarness, type TokenHarnessOptions } from './token-harness.ts';

const ROOM = '!room:example.com';
const SLOT = 'm.call#';
const LK_ROOM = liveKitRoomAlias(ROOM, SLOT);
const running: TokenHarness[] = [];
afterEach(async () => {
  for (const h of running.splice(0)) await h.stop();
});
async function start(opts: TokenHarnessOptions = {}): Promise<TokenHarness> {
  const h = await startTokenHarness(opts);
  running.push(h);
  return h;
}

function delegate(h: TokenHarness, o: { user?: string; member?: string; delayId: string; timeout: number }) {
  const u = h.user(o.user ?? 'alice', { joinedTo: [ROOM] });
  const member = o.member ?? 'member-1';
  const body = {
    room_id: ROOM,
    slot_id: SLOT,
    openid_token: u.openid,
    member: { id: member, claimed_user_id: u.userId, claimed_device_id: 'DEVICE' },
    delay_id: o.delayId,
    delay_timeout: o.timeout,
  };
  return { identity: liveKitIdentityForMember(u.userId, 'DEVICE', member), body, user: u, send: () => h.post('/delegate_delayed_leave', body) };
}

const until = (what: string, probe: () => boolean, timeoutMs = 5000) => waitFor(what, () => probe() || undefined, { timeoutMs });

describe('POST /delegate_delayed_leave', () => {
  it('accepts a delegation and answers {} (success)', async () => {
    const h = await start();
    const d = delegate(h, { delayId: 'syd_a', timeout: 10_000 });
    h.hs.scheduleDelayedEvent({ delayId: 'syd_a', roomId: ROOM, delayMs: 10_000, userId: d.user.userId });
    const res = await d.send();
    expect(res.status).toBe(200);
    expect(res.text).toBe('{}\n');
    expect(h.service.delayedLeave.state(LK_ROOM, d.identity)).toBe('waiting');
  });

  it('rejects an unknown OpenID token (unknown_token)', async () => {
    const h = await start();
    const d = delegate(h, { delayId: 'syd_a', timeout: 1000 });
    const res = await h.post('/delegate_delayed_leave', { ...d.body, openid_token: { access_token: 'x', matrix_server_name: h.fed.serverName } });
    expect(res.status).toBe(401);
    expect(res.json!.errcode).toBe('M_UNAUTHORIZED');
  });

  it('rejects a claimed user other than the OpenID subject (claimed_user_mismatch)', async () => {
    const h = await start();
    const d = delegate(h, { delayId: 'syd_a', timeout: 1000 });
    const res = await h.post('/delegate_delayed_leave', { ...d.body, member: { ...d.body.member, claimed_user_id: '@bob:elsewhere' } });
    expect(res.status).toBe(401);
  });

  it('answers a restricted homeserver 403 M_FORBIDDEN (restricted_homeserver)', async () => {
    const h = await start({ fullAccess: 'trusted.example.com' });
    const res = await delegate(h, { delayId: 'syd_a', timeout: 1000 }).send();
    expect(res.status).toBe(403);
    expect(res.json).toEqual({ errcode: 'M_FORBIDDEN', error: 'Delegation of delayed events is only supported for full access users' });
  });

  it('rejects an unresolvable client-server API (unresolvable_cs_api)', async () => {
    const h = await start({ env: { LIVEKIT_CS_API_URL_OVERRIDES: '' } });
    const res = await delegate(h, { delayId: 'syd_a', timeout: 1000 }).send();
    expect(res.json).toEqual({ errcode: 'M_BAD_JSON', error: 'Unable to resolve client-server API' });
  });

  it('requires both delay parameters (missing_delay_params)', async () => {
    const h = await start();
    const d = delegate(h, { delayId: 'syd_a', timeout: 1000 });
    for (const body of [{ ...d.body, delay_id: '' }, { ...d.body, delay_timeout: 0 }]) {
      const res = await h.post('/delegate_delayed_leave', body);
      expect(res.json).toEqual({ errcode: 'M_BAD_JSON', error: 'The request body is missing `delay_id` or `delay_timeout`' });
    }
    const res = await h.post('/delegate_delayed_leave', { ...d.body, member: { id: 'x' } });
    expect(res.json!.error).toBe('The request body `member` is missing `id`, `claimed_user_id` or `claimed_device_id`');
  });

  it('refuses a delay_timeout above 24 h with a clear 400, and keeps no job', async () => {
    const h = await start();
    const d = delegate(h, { delayId: 'syd_huge', timeout: 3e9 });
    const res = await d.send();
    expect(res.status).toBe(400);
    expect(res.json).toEqual({ errcode: 'M_BAD_JSON', error: '`delay_timeout` is 3000000000 ms; at most 86400000 (24 h) is supported' });
    expect(h.service.delayedLeave.size()).toBe(0);
    expect(h.hs.actions()).toEqual([]);
  });

  it('answers malformed JSON with M_NOT_JSON (malformed_json)', async () => {
    const h = await start();
    expect((await h.post('/delegate_delayed_leave', '{')).json).toEqual({ errcode: 'M_NOT_JSON', error: 'Error reading request' });
  });

  it('answers GET with 405 (get_instead_of_post)', async () => {
    const h = await start();
    expect((await h.request('GET', '/delegate_delayed_leave')).status).toBe(405);
  });
});

describe('delegated delayed-leave lifecycle', () => {
  it('aborts and sends when the connection is never established', async () => {
    const h = await start();
    const d = delegate(h, { delayId: 'syd_never', timeout: 400 });
    h.hs.scheduleDelayedEvent({ delayId: 'syd_never', roomId: ROOM, delayMs: 400, userId: d.user.userId });
    expect((await d.send()).status).toBe(200);
    await until('send', () => h.hs.actions().includes('syd_never:send'));
    expect(h.hs.actions()).toEqual(['syd_never:send']);
    await until('job gone', () => h.service.delayedLeave.size() === 0);
  });

  it('aborts without sending when the connection is aborted before being established', async () => {
    const h = await start();
    const d = delegate(h, { delayId: 'syd_ab', timeout: 30_000 });
    await d.send();
    expect(await h.webhook('participant_connection_aborted', LK_ROOM, d.identity)).toBe(200);
    await until('job gone', () => h.service.delayedLeave.size() === 0);
    expect(h.hs.actions()).toEqual([]);
  });

  it('aborts and sends when the connection is aborted after being established', async () => {
    const h = await start();
    const d = delegate(h, { delayId: 'syd_aa', timeout: 30_000 });
    h.hs.scheduleDelayedEvent({ delayId: 'syd_aa', roomId: ROOM, delayMs: 30_000, userId: d.user.userId });
    await d.send();
    await h.webhook('participant_joined', LK_ROOM, d.identity);
    await until('restart', () => h.hs.actions().includes('syd_aa:restart'));
    await h.webhook('participant_left', LK_ROOM, d.identity, false);
    await until('send', () => h.hs.actions().includes('syd_aa:send'));
    expect(h.hs.actions()).toEqual(['syd_aa:restart', 'syd_aa:send']);
  });

  it('aborts and sends when the participant disconnects', async () => {
    const h = await start();
    const d = delegate(h, { delayId: 'syd_dc', timeout: 30_000 });
    h.hs.scheduleDelayedEvent({ delayId: 'syd_dc', roomId: ROOM, delayMs: 30_000, userId: d.user.userId });
    await d.send();
    await h.webhook('participant_joined', LK_ROOM, d.identity);
    await until('restart', () => h.hs.actions().includes('syd_dc:restart'));
    await h.webhook('participant_left', LK_ROOM, d.identity, true);
    await until('send', () => h.hs.actions().includes('syd_dc:send'));
    await until('job gone', () => h.service.delayedLeave.size() === 0);
    expect(h.hs.hasDelayedEvent('syd_dc')).toBe(false);
  });

  it('restarts the delayed event repeatedly while connected', async () => {
    const h = await start();
    const d = delegate(h, { delayId: 'syd_rr', timeout: 500 });
    h.hs.scheduleDelayedEvent({ delayId: 'syd_rr', roomId: ROOM, delayMs: 500, userId: d.user.userId });
    await d.send();
    await h.webhook('participant_joined', LK_ROOM, d.identity);
    await until('three restarts', () => h.hs.actions().filter((a) => a === 'syd_rr:restart').length >= 3);
    expect(h.hs.actions().includes('syd_rr:send')).toBe(false);
  });

  it('aborts when the delayed event is gone (restart 404)', async () => {
    const h = await start();
    const d = delegate(h, { delayId: 'syd_gone', timeout: 30_000 });
    await d.send();
    await h.webhook('participant_joined', LK_ROOM, d.identity);
    await until('job gone', () => h.service.delayedLeave.size() === 0);
    expect(h.hs.actions()).toEqual(['syd_gone:restart']);
  });

  it('completes when the delayed event was already sent (send 404)', async () => {
    const h = await start();
    const d = delegate(h, { delayId: 'syd_sent', timeout: 30_000 });
    h.hs.scheduleDelayedEvent({ delayId: 'syd_sent', roomId: ROOM, delayMs: 30_000, userId: d.user.userId });
    h.hs.script('syd_sent', 'send', [{ status: 404, body: { errcode: 'M_NOT_FOUND', error: 'Delayed event not found' } }]);
    await d.send();
    await h.webhook('participant_joined', LK_ROOM, d.identity);
    await until('restart', () => h.hs.actions().includes('syd_sent:restart'));
    await h.webhook('participant_left', LK_ROOM, d.identity, true);
    await until('job gone', () => h.service.delayedLeave.size() === 0);
    expect(h.hs.actions()).toEqual(['syd_sent:restart', 'syd_sent:send']);
  });

  it('retries a send after 500 and after 429 with Retry-After', async () => {
    const h = await start();
    const d = delegate(h, { delayId: 'syd_429', timeout: 30_000 });
    h.hs.scheduleDelayedEvent({ delayId: 'syd_429', roomId: ROOM, delayMs: 30_000, userId: d.user.userId });
    h.hs.script('syd_429', 'send', [
      { status: 500, body: { errcode: 'M_UNKNOWN', error: 'Internal server error' } },
      { status: 429, body: { errcode: 'M_LIMIT_EXCEEDED', error: 'Too Many Requests', retry_after_ms: 1200 }, headers: { 'Retry-After': '1' } },
    ]);
    await d.send();
    await h.webhook('participant_joined', LK_ROOM, d.identity);
    await until('restart', () => h.hs.actions().includes('syd_429:restart'));
    await h.webhook('participant_left', LK_ROOM, d.identity, true);
    await until('three sends', () => h.hs.actions().filter((a) => a === 'syd_429:send').length === 3, 10_000);
    await until('job gone', () => h.service.delayedLeave.size() === 0);
    const sends = h.hs.requests.filter((r) => r.path.endsWith('/syd_429/send'));
    expect(sends[2]!.at - sends[1]!.at).toBeGreaterThanOrEqual(990);
    expect(sends.every((r) => r.authorization === undefined)).toBe(true);
  });

  it('replaces a job by a newer one and only the latest acts (job_replacement_only_affects_latest_job)', async () => {
    const h = await start();
    const old = delegate(h, { delayId: 'syd_old', timeout: 30_000 });
    await old.send();
    const d = delegate(h, { delayId: 'syd_new', timeout: 30_000 });
    h.hs.scheduleDelayedEvent({ delayId: 'syd_new', roomId: ROOM, delayMs: 30_000, userId: d.user.userId });
    await d.send();
    await h.webhook('participant_joined', LK_ROOM, d.identity);
    await until('restart', () => h.hs.actions().includes('syd_new:restart'));
    await h.webhook('participant_left', LK_ROOM, d.identity, true);
    await until('job gone', () => h.service.delayedLeave.size() === 0);
    expect(h.hs.actions()).toEqual(['syd_new:restart', 'syd_new:send']);
  });

  it('keeps independent jobs apart (independent_jobs_do_not_cross_talk)', async () => {
    const h = await start();
    const a = delegate(h, { user: 'alice', delayId: 'syd_a', timeout: 30_000 });
    const b = delegate(h, { user: 'bob', delayId: 'syd_b', timeout: 30_000 });
    h.hs.scheduleDelayedEvent({ delayId: 'syd_a', roomId: ROOM, delayMs: 30_000, userId: a.user.userId });
    h.hs.scheduleDelayedEvent({ delayId: 'syd_b', roomId: ROOM, delayMs: 30_000, userId: b.user.userId });
    await a.send();
    await b.send();
    await h.webhook('participant_joined', LK_ROOM, a.identity);
    await until('restart a', () => h.hs.actions().includes('syd_a:restart'));
    await h.webhook('participant_left', LK_ROOM, a.identity, true);
    await until('send a', () => h.hs.actions().includes('syd_a:send'));
    expect(h.hs.actions().filter((x) => x.startsWith('syd_b'))).toEqual([]);
    expect(h.service.delayedLeave.state(LK_ROOM, b.identity)).toBe('waiting');
  });

  it('refuses webhooks with a bad signature (401) and leaves the job alone', async () => {
    const h = await start();
    const d = delegate(h, { delayId: 'syd_sig', timeout: 30_000 });
    await d.send();
    const res = await h.request('POST', '/sfu_webhook', {
      body: JSON.stringify({ event: 'participant_joined', room: { name: LK_ROOM }, participant: { identity: d.identity } }),
      headers: { 'Content-Type': 'application/webhook+json', Authorization: 'not-a-jwt' },
    });
    expect(res.status).toBe(401);
    expect(h.service.delayedLeave.state(LK_ROOM, d.identity)).toBe('waiting');
  });
});
