/**
 * LiveKit signalling at the SFU's edge with a raw WebSocket client: routes and fallbacks,
 * token refusals with LiveKit's statuses and texts, the join flow (JoinResponse, first
 * subscriber offer, ping/pong, refresh_token, leave), resume answered with a leave that makes
 * the client rejoin, JSON framing, and room lifecycle timers on a manual clock.
 */
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { SignJWT } from 'jose';
import {
  DisconnectReason,
  LeaveRequest,
  LeaveRequest_Action,
  ParticipantInfo_State,
  Ping,
  SignalRequest,
  CreateRoomRequest,
} from '@livekit/protocol';
import { TokenVerifier } from 'livekit-server-sdk';
import { createManualClock } from '../../common/clock.ts';
import { startTestSfu, TEST_API_KEY, TEST_API_SECRET, type TestSfu } from '../support/sfu-harness.ts';
import { waitFor } from '../support/wait.ts';
import { openRaw, rtcUrl, upgradeRefusal } from '../support/raw-signal.ts';
import type { SfuEvent } from '../../sfu/room-service-api.ts';

async function rawToken(payload: Record<string, unknown>, secret = TEST_API_SECRET, iss = TEST_API_KEY) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ sub: 'alice', video: { roomJoin: true, room: 'test-room' }, ...payload })
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer(iss)
    .setNotBefore(now)
    .setExpirationTime(now + 600)
    .sign(new TextEncoder().encode(secret));
}

describe('sfu signalling', () => {
  let sfu: TestSfu | undefined;
  const sockets: WebSocket[] = [];

  afterEach(async () => {
    for (const ws of sockets.splice(0)) ws.terminate();
    await sfu?.stop();
    sfu = undefined;
  });

  it('answers /rtc/v1 and /rtc/v1/validate with a CORS 404 so clients fall back to /rtc', async () => {
    sfu = await startTestSfu();
    const token = await sfu.token('alice');
    for (const path of ['/rtc/v1', '/rtc/v1/validate']) {
      const res = await fetch(`${sfu.url}${path}?access_token=${token}`);
      expect(res.status).toBe(404);
      expect(res.headers.get('access-control-allow-origin')).toBe('*');
      expect(await res.text()).not.toContain('requested room does not exist');
    }
    const refused = await upgradeRefusal(`${sfu.wsUrl}/rtc/v1?access_token=${token}`);
    expect(refused.status).toBe(404);
    expect(refused.cors).toBe('*');
    expect(refused.body).not.toContain('requested room does not exist');
  });

  it('validates a good token with 200 "success"', async () => {
    sfu = await startTestSfu();
    const res = await fetch(`${sfu.url}/rtc/validate?access_token=${await sfu.token('alice')}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
    expect(await res.text()).toBe('success');
  });

  it.each([
    {
      what: 'an expired token',
      token: async () => {
        const now = Math.floor(Date.now() / 1000);
        return new SignJWT({ sub: 'alice', video: { roomJoin: true, room: 'test-room' } })
          .setProtectedHeader({ alg: 'HS256' })
          .setIssuer(TEST_API_KEY)
          .setExpirationTime(now - 120)
          .sign(new TextEncoder().encode(TEST_API_SECRET));
      },
      status: 401,
      body: /^invalid authorization token: .*expired/,
    },
    {
      what: 'a bad signature',
      token: () => rawToken({}, 'another-secret-0123456789abcdef-0123456789'),
      status: 401,
      body: /^invalid authorization token: .*signature/,
    },
    { what: 'an unknown key', token: () => rawToken({}, TEST_API_SECRET, 'nokey'), status: 401, body: /^invalid API key$/ },
    {
      what: 'a token without roomJoin',
      token: () => rawToken({ video: { room: 'test-room', canPublish: true } }),
      status: 401,
      body: /^permissions denied$/,
    },
    {
      what: 'a token without a video grant',
      token: () => rawToken({ video: undefined }),
      status: 401,
      body: /^permissions denied$/,
    },
  ])('refuses $what with $status on validate and on the WebSocket', async ({ token, status, body }) => {
    sfu = await startTestSfu();
    const t = await token();
    const res = await fetch(`${sfu.url}/rtc/validate?access_token=${t}`);
    expect(res.status).toBe(status);
    expect(await res.text()).toMatch(body);
    const refused = await upgradeRefusal(rtcUrl(sfu, t));
    expect(refused.status).toBe(status);
    expect(refused.body).toMatch(body);
  });

  it('accepts a token that expired within the 60 s leeway', async () => {
    sfu = await startTestSfu();
    const now = Math.floor(Date.now() / 1000);
    const t = await new SignJWT({ sub: 'alice', video: { roomJoin: true, room: 'test-room' } })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer(TEST_API_KEY)
      .setExpirationTime(now - 30)
      .sign(new TextEncoder().encode(TEST_API_SECRET));
    const res = await fetch(`${sfu.url}/rtc/validate?access_token=${t}`);
    expect(res.status).toBe(200);
  });

  it('refuses a missing room with 404 "requested room does not exist" when auto_create is off', async () => {
    sfu = await startTestSfu({ room: { auto_create: false } });
    const t = await sfu.token('alice');
    const res = await fetch(`${sfu.url}/rtc/validate?access_token=${t}`);
    expect(res.status).toBe(404);
    expect(await res.text()).toBe('requested room does not exist');
    const refused = await upgradeRefusal(rtcUrl(sfu, t));
    expect(refused.status).toBe(404);
    expect(refused.body).toBe('requested room does not exist');
    // Once the room exists, the same token joins.
    await sfu.sfu.rooms.createRoom(new CreateRoomRequest({ name: 'test-room' }));
    const c = await openRaw(rtcUrl(sfu, t));
    sockets.push(c.ws);
    await c.next('join');
  });

  it('refuses a participant beyond max_participants', async () => {
    sfu = await startTestSfu({ room: { max_participants: 1 } });
    const a = await openRaw(rtcUrl(sfu, await sfu.token('alice')));
    sockets.push(a.ws);
    await a.next('join');
    const refused = await upgradeRefusal(rtcUrl(sfu, await sfu.token('bob')));
    expect(refused.status).toBe(500);
    expect(refused.body).toBe('room has exceeded its max participants');
  });

  it('joins with a complete JoinResponse, offers the subscriber PC, answers pings and refreshes the token', async () => {
    sfu = await startTestSfu();
    const c = await openRaw(rtcUrl(sfu, await sfu.token('alice', { roomJoin: true, room: 'test-room' }, { name: 'Alice' })));
    sockets.push(c.ws);
    const join = await c.next('join');
    expect(join.participant?.identity).toBe('alice');
    expect(join.participant?.name).toBe('Alice');
    expect(join.participant?.sid).toMatch(/^PA_/);
    expect(join.room?.name).toBe('test-room');
    expect(join.room?.sid).toMatch(/^RM_/);
    expect(join.serverInfo?.version).not.toBe('');
    expect(join.serverVersion).not.toBe('');
    expect(join.subscriberPrimary).toBe(true);
    expect(join.pingInterval).toBeGreaterThan(0);
    expect(join.pingTimeout).toBeGreaterThan(join.pingInterval);
    expect(join.enabledPublishCodecs.map((codec) => codec.mime)).toEqual(['audio/opus', 'video/VP8']);

    const offer = await c.next('offer');
    expect(offer.type).toBe('offer');
    expect(offer.id).toBeGreaterThan(0);
    expect(offer.sdp).toContain('m=application');
    expect(offer.sdp).toContain('127.0.0.1');
    expect(offer.sdp).not.toMatch(/stun\.l\.google/);

    c.send(new SignalRequest({ message: { case: 'ping', value: 1234n } }));
    const pong = await c.next('pong');
    expect(pong).toBeGreaterThan(0n);
    c.send(new SignalRequest({ message: { case: 'pingReq', value: new Ping({ timestamp: 777n, rtt: 5n }) } }));
    const pongResp = await c.next('pongResp');
    expect(pongResp.lastPingTimestamp).toBe(777n);

    const refreshed = await c.next('refreshToken');
    const claims = await new TokenVerifier(TEST_API_KEY, TEST_API_SECRET).verify(refreshed);
    expect(claims.sub).toBe('alice');
    expect(claims.video?.room).toBe('test-room');
    expect(claims.video?.roomJoin).toBe(true);

    c.send(
      new SignalRequest({
        message: {
          case: 'leave',
          value: new LeaveRequest({ reason: DisconnectReason.CLIENT_INITIATED, action: LeaveRequest_Action.DISCONNECT }),
        },
      }),
    );
    await c.closed;
    await waitFor('participant removed', () => sfu!.sfu.rooms.getRoom('test-room')?.participants.size === 0 || !sfu!.sfu.rooms.getRoom('test-room'));
  });

  it('answers a resume attempt with leave STATE_MISMATCH / RECONNECT as the first frame', async () => {
    sfu = await startTestSfu();
    const c = await openRaw(rtcUrl(sfu, await sfu.token('alice'), '&reconnect=1&sid=PA_old'));
    sockets.push(c.ws);
    const leave = await c.next('leave');
    expect(c.messages[0]!.message.case).toBe('leave');
    expect(leave.reason).toBe(DisconnectReason.STATE_MISMATCH);
    expect(leave.action).toBe(LeaveRequest_Action.RECONNECT);
    await c.closed;
  });

  it('answers JSON frames in JSON', async () => {
    sfu = await startTestSfu();
    const c = await openRaw(rtcUrl(sfu, await sfu.token('alice')));
    sockets.push(c.ws);
    await c.next('join');
    const before = c.textFrames;
    c.send(new SignalRequest({ message: { case: 'ping', value: 42n } }), true);
    await c.next('pong');
    expect(c.textFrames).toBeGreaterThan(before);
  });

  it('announces joins with increasing versions and evicts a duplicate identity', async () => {
    sfu = await startTestSfu();
    const bob = await openRaw(rtcUrl(sfu, await sfu.token('bob')));
    sockets.push(bob.ws);
    await bob.next('join');
    const alice1 = await openRaw(rtcUrl(sfu, await sfu.token('alice')));
    sockets.push(alice1.ws);
    const join1 = await alice1.next('join');
    expect(join1.otherParticipants.map((p) => p.identity)).toEqual(['bob']);
    const first = await bob.next('update');
    expect(first.participants[0]!.identity).toBe('alice');
    expect(first.participants[0]!.state).toBe(ParticipantInfo_State.JOINED);

    const alice2 = await openRaw(rtcUrl(sfu, await sfu.token('alice')));
    sockets.push(alice2.ws);
    const leave = await alice1.next('leave');
    expect(leave.reason).toBe(DisconnectReason.DUPLICATE_IDENTITY);
    await alice1.closed;
    const join2 = await alice2.next('join');
    expect(join2.participant?.sid).not.toBe(join1.participant?.sid);

    // bob sees the old session disconnect (with a higher version than its join) and the new one join.
    const gone = await waitFor('old alice disconnected at bob', () =>
      bob.messages
        .flatMap((m) => (m.message.case === 'update' ? m.message.value.participants : []))
        .find((p) => p.sid === join1.participant!.sid && p.state === ParticipantInfo_State.DISCONNECTED),
    );
    expect(gone.version).toBeGreaterThan(first.participants[0]!.version);
    await waitFor('new alice announced at bob', () =>
      bob.messages
        .flatMap((m) => (m.message.case === 'update' ? m.message.value.participants : []))
        .find((p) => p.sid === join2.participant!.sid),
    );
  });

  it('closes an empty room after empty_timeout and a left room after departure_timeout (manual clock)', async () => {
    const clock = createManualClock(Date.now());
    sfu = await startTestSfu({ clock, room: { empty_timeout: 30, departure_timeout: 5 } });
    const events: SfuEvent[] = [];
    sfu.sfu.rooms.onEvent((e) => events.push(e));

    await sfu.sfu.rooms.createRoom(new CreateRoomRequest({ name: 'idle' }));
    clock.advance(29_000);
    expect(sfu.sfu.rooms.getRoom('idle')).toBeDefined();
    clock.advance(2_000);
    expect(sfu.sfu.rooms.getRoom('idle')).toBeUndefined();
    expect(events.some((e) => e.type === 'room_finished' && e.room.name === 'idle')).toBe(true);

    const c = await openRaw(rtcUrl(sfu, await sfu.token('alice')));
    sockets.push(c.ws);
    await c.next('join');
    c.ws.close();
    await waitFor('alice gone', () => sfu!.sfu.rooms.getRoom('test-room')?.participants.size === 0);
    clock.advance(4_000);
    expect(sfu.sfu.rooms.getRoom('test-room')).toBeDefined();
    clock.advance(2_000);
    expect(sfu.sfu.rooms.getRoom('test-room')).toBeUndefined();
    expect(events.filter((e) => e.type === 'participant_connection_aborted').map((e) => e.type)).toHaveLength(1);
  });
});
