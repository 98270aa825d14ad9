/**
 * The fake homeserver's MatrixRTC profiles over real HTTP, against what Synapse does
 * (test/fake-homeserver/matrix-rtc.ts): on the recorded 1.132 `/rtc/transports` is 404
 * M_UNRECOGNIZED (fixtures/element-call/run1-timeline.txt) and a sticky duration is ignored;
 * with `msc4143_enabled` (>= 1.140) it answers `matrix_rtc.transports` to an authenticated user;
 * with `msc4354_enabled` (>= 1.148) matrix-js-sdk's own MatrixClient + StickyEventMembershipManager
 * can send its sticky delayed leave and join, and the appservice receives them in ordinary
 * transactions with `msc4354_sticky` and the remaining TTL, the delayed leave too when it fires.
 */
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { startRecordingAppservice, type RecordingAppservice } from '../fake-homeserver/recording-appservice.ts';
import { startFakeHomeserver, testRegistration, type FakeHomeserver } from '../fake-homeserver/server.ts';
import { profileFromHomeserverConfig, RTC_TRANSPORTS_PATH, type MatrixRtcProfile } from '../fake-homeserver/matrix-rtc.ts';
import { matrixClientFor, RTC_MEMBER, startStickyMember, type StickyMember } from '../support/matrixrtc-sticky.ts';
import { waitFor } from '../support/wait.ts';

let hs: FakeHomeserver | undefined;
let as: RecordingAppservice | undefined;
let member: StickyMember | undefined;
afterEach(async () => {
  await member?.stop();
  await hs?.stop();
  await as?.stop();
  hs = as = member = undefined;
});

const TRANSPORT = { type: 'livekit', livekit_service_url: 'https://rtc.example.org/livekit/jwt' };

async function setup(matrixRtc?: MatrixRtcProfile) {
  as = await startRecordingAppservice();
  hs = await startFakeHomeserver({ registration: testRegistration(as.url), matrixRtc });
  const carol = hs.model.registerUser('carol').userId;
  const alice = hs.model.registerUser('alice');
  const roomId = hs.model.createRoom(carol, { version: '10', invite: [alice.userId] });
  hs.model.setMembership(alice.userId, roomId, alice.userId, 'join');
  const base = hs.url;
  const call = async (method: string, path: string, token?: string, body?: unknown) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  /** Every event the appservice received so far, in order. */
  const pushedEvents = () => as!.transactions().flatMap((t) => ((t.body as { events?: Record<string, unknown>[] }).events ?? []));
  return { hs, roomId, alice, call, pushedEvents };
}

describe('fake homeserver: MatrixRTC transports discovery', () => {
  it('answers 404 M_UNRECOGNIZED on the recorded Synapse 1.132 profile, even to a user', async () => {
    const w = await setup();
    expect(await w.call('GET', RTC_TRANSPORTS_PATH, w.alice.accessToken)).toEqual({ status: 404, body: { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' } });
  });
  it('answers matrix_rtc.transports to a user with msc4143_enabled (>= 1.140), 401 without a token, {} when none are configured', async () => {
    const w = await setup({ msc4143: true, transports: [TRANSPORT] });
    expect(await w.call('GET', RTC_TRANSPORTS_PATH, w.alice.accessToken)).toEqual({ status: 200, body: { rtc_transports: [TRANSPORT] } });
    expect(await w.call('GET', RTC_TRANSPORTS_PATH)).toMatchObject({ status: 401, body: { errcode: 'M_MISSING_TOKEN' } });
    await hs!.stop();
    await as!.stop();
    const bare = await setup({ msc4143: true });
    expect(await bare.call('GET', RTC_TRANSPORTS_PATH, bare.alice.accessToken)).toEqual({ status: 200, body: {} });
  });
  it('run as the trial`s synapse-dev/homeserver.yaml says, hands Element Call the token service Caddy publishes, and takes sticky events', async () => {
    const yaml = parse(readFileSync(new URL('../../synapse-dev/homeserver.yaml', import.meta.url), 'utf8')) as Record<string, unknown>;
    const w = await setup(profileFromHomeserverConfig(yaml));
    expect(await w.call('GET', RTC_TRANSPORTS_PATH, w.alice.accessToken)).toEqual({ status: 200, body: { rtc_transports: [{ type: 'livekit', livekit_service_url: 'https://rtc.localhost/livekit/jwt' }] } });
    const versions = await w.call('GET', '/_matrix/client/versions');
    expect((versions.body.unstable_features as Record<string, boolean>)['org.matrix.msc4354']).toBe(true);
  });
});

describe('fake homeserver: MSC4354 sticky events', () => {
  const sendPath = (roomId: string, query: string) => `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/${RTC_MEMBER}/t${Math.random()}${query}`;

  it('on the 1.132 profile ignores the sticky duration: an ordinary event, and no org.matrix.msc4354 in /versions', async () => {
    const w = await setup();
    const versions = await w.call('GET', '/_matrix/client/versions');
    expect((versions.body.unstable_features as Record<string, boolean>)['org.matrix.msc4354']).toBeUndefined();
    const sent = await w.call('PUT', sendPath(w.roomId, '?org.matrix.msc4354.sticky_duration_ms=60000'), w.alice.accessToken, { msc4354_sticky_key: 'k' });
    expect(sent.status).toBe(200);
    await waitFor('pushed', () => w.pushedEvents().some((e) => e.event_id === sent.body.event_id));
    const ev = w.pushedEvents().find((e) => e.event_id === sent.body.event_id)!;
    expect(ev.msc4354_sticky).toBeUndefined();
    expect((ev.unsigned as Record<string, unknown>).msc4354_sticky_duration_ttl_ms).toBeUndefined();
  });

  it('refuses a sticky duration that is not a non-negative integer, as Synapse`s parse_integer does', async () => {
    const w = await setup({ msc4354: true });
    expect(await w.call('PUT', sendPath(w.roomId, '?org.matrix.msc4354.sticky_duration_ms=1h'), w.alice.accessToken, {})).toEqual({
      status: 400,
      body: { errcode: 'M_INVALID_PARAM', error: 'Query parameter org.matrix.msc4354.sticky_duration_ms must be an integer' },
    });
    expect(await w.call('PUT', sendPath(w.roomId, '?org.matrix.msc4354.sticky_duration_ms=-5'), w.alice.accessToken, {})).toEqual({
      status: 400,
      body: { errcode: 'M_INVALID_PARAM', error: 'Query parameter org.matrix.msc4354.sticky_duration_ms must be a positive integer.' },
    });
  });

  it('takes what matrix-js-sdk sends and pushes it to the appservice like any timeline event, with msc4354_sticky and the TTL; the delayed sticky leave too', async () => {
    const w = await setup({ msc4354: true });
    const versions = await w.call('GET', '/_matrix/client/versions');
    expect((versions.body.unstable_features as Record<string, boolean>)['org.matrix.msc4354']).toBe(true);
    const client = matrixClientFor(w.hs.url, w.alice.userId, 'DEVICEA', w.alice.accessToken);
    // The delayed leave fires after 1 s unless restarted; js-sdk restarts every 5 s, so it fires.
    member = startStickyMember({ client, roomId: w.roomId, config: { delayedLeaveEventDelayMs: 1000, delayedLeaveEventRestartMs: 60_000 } });
    member.join();
    const key = member.memberId;
    const ofMember = () => w.pushedEvents().filter((e) => e.type === RTC_MEMBER && (e.content as Record<string, unknown>).msc4354_sticky_key === key);
    await waitFor('sticky join pushed', () => ofMember().length >= 1, { timeoutMs: 5_000 });
    const join = ofMember()[0]!;
    expect(join).toMatchObject({
      sender: w.alice.userId,
      room_id: w.roomId,
      msc4354_sticky: { duration_ms: 3_600_000 },
      content: { slot_id: 'm.call#ROOM', member: { user_id: w.alice.userId, device_id: 'DEVICEA', id: key } },
    });
    const ttl = (join.unsigned as Record<string, number>).msc4354_sticky_duration_ttl_ms;
    expect(ttl).toBeGreaterThan(3_600_000 - 5_000);
    expect(ttl).toBeLessThanOrEqual(3_600_000);

    await waitFor('delayed sticky leave fired and pushed', () => ofMember().length >= 2, { timeoutMs: 5_000 });
    const leave = ofMember()[1]!;
    expect(leave).toMatchObject({ msc4354_sticky: { duration_ms: 3_600_000 }, content: { slot_id: 'm.call#ROOM', msc4354_sticky_key: key } });
    expect((leave.content as Record<string, unknown>).member).toBeUndefined();
  });
});
