/**
 * Webhooks from a real SFU (session layer + notifier wired in sfu/server.ts) to a receiver on
 * 127.0.0.1 that checks each one with livekit-server-sdk's WebhookReceiver, as lk-jwt-service
 * does: a real @livekit/rtc-node participant joins, publishes, unpublishes and leaves, and the
 * events arrive in that order; a receiver answering 500 gets the same event again.
 */
import { DisconnectReason as ProtoDisconnectReason, SignalResponse } from '@livekit/protocol';
import WebSocket from 'ws';
import { AccessToken, RoomServiceClient, type WebhookEvent } from 'livekit-server-sdk';
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../common/clock.ts';
import { createSilentLogger } from '../../common/logger.ts';
import { parseSfuConfig } from '../../sfu/config.ts';
import { suiteWorkerConfig } from '../support/sfu-harness.ts';
import { createSfuServer, type SfuServer } from '../../sfu/server.ts';
import { startTestWebhookReceiver, type TestWebhookReceiver } from '../support/webhook-receiver.ts';
import { connectRtcNode, type RtcNodeClient } from '../support/rtc-node.ts';
import { waitFor } from '../support/wait.ts';

const KEY = 'hookapikey';
const SECRET = 'webhook-secret-0123456789abcdef-0123456789';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).toReversed()) await c();
});

async function setup(respond?: (n: number) => number | 'hang') {
  const receiver: TestWebhookReceiver = await startTestWebhookReceiver({
    apiKey: KEY,
    apiSecret: SECRET,
    ...(respond ? { respond } : {}),
  });
  cleanups.push(() => receiver.stop());
  const config = parseSfuConfig(
    {
      port: 0,
      bind_addresses: ['127.0.0.1'],
      keys: { [KEY]: SECRET },
      rtc: { node_ip: '127.0.0.1', port_range_start: 40000, port_range_end: 49999 },
      webhook: { api_key: KEY, urls: [receiver.url] },
      ...suiteWorkerConfig(),
    },
    'test',
  );
  const sfu: SfuServer = createSfuServer({
    config,
    logger: createSilentLogger(),
    clock: systemClock,
    webhook: { initialBackoffMs: 20, maxBackoffMs: 100 },
  });
  const { url } = await sfu.start();
  cleanups.push(() => sfu.stop());
  const api = new RoomServiceClient(url, KEY, SECRET);
  const join = async (room: string, identity: string): Promise<RtcNodeClient> => {
    const at = new AccessToken(KEY, SECRET, { identity, ttl: '10m' });
    at.addGrant({ roomJoin: true, room });
    const client = await connectRtcNode(url.replace(/^http/, 'ws'), await at.toJwt());
    cleanups.push(() => client.disconnect());
    return client;
  };
  const eventsOf = (room: string): WebhookEvent[] => receiver.accepted().filter((e) => e.room?.name === room);
  const token = async (room: string, identity: string) => {
    const at = new AccessToken(KEY, SECRET, { identity, ttl: '10m' });
    at.addGrant({ roomJoin: true, room });
    return await at.toJwt();
  };
  return { receiver, sfu, url, api, join, token, eventsOf };
}

describe('webhooks from a real SFU', () => {
  it('a participant who joins, publishes, unpublishes and leaves produces verified webhooks in order', async () => {
    const { api, join, eventsOf, receiver } = await setup();
    const room = 'hook-room-1';
    await api.createRoom({ name: room });
    const alice = await join(room, 'alice');
    const tone = await alice.publishTone(440);
    const trackSid = tone.publication.sid!;
    await waitFor('track_published', () => eventsOf(room).some((e) => e.event === 'track_published'));
    await tone.stop();
    await alice.room.localParticipant!.unpublishTrack(trackSid);
    await waitFor('track_unpublished', () => eventsOf(room).some((e) => e.event === 'track_unpublished'));
    await alice.disconnect();
    await waitFor('participant_left', () => eventsOf(room).some((e) => e.event === 'participant_left'));
    await api.deleteRoom(room);
    await waitFor('room_finished', () => eventsOf(room).some((e) => e.event === 'room_finished'));

    expect(receiver.requests.filter((r) => r.error)).toEqual([]);
    const got = eventsOf(room);
    expect(got.map((e) => e.event)).toEqual([
      'room_started',
      'participant_joined',
      'track_published',
      'track_unpublished',
      'participant_left',
      'room_finished',
    ]);
    const [, joined, published, unpublished, left] = got;
    expect(joined!.participant?.identity).toBe('alice');
    expect(published!.track?.sid).toBe(trackSid);
    expect(unpublished!.track?.sid).toBe(trackSid);
    expect(left!.participant?.identity).toBe('alice');
    expect(left!.participant?.disconnectReason).toBe(ProtoDisconnectReason.CLIENT_INITIATED);
    expect(new Set(got.map((e) => e.id)).size).toBe(got.length);
    for (const e of got) expect(e.id).toMatch(/^EV_/);
  });

  it('retries a receiver that answers 500 and still delivers every event once accepted, in order', async () => {
    // The first two requests fail: the first event is sent three times.
    const { api, join, eventsOf, receiver } = await setup((n) => (n <= 2 ? 500 : 200));
    const room = 'hook-room-2';
    await api.createRoom({ name: room });
    const bob = await join(room, 'bob');
    await waitFor('participant_joined', () => eventsOf(room).some((e) => e.event === 'participant_joined'));
    await bob.disconnect();
    await waitFor('participant_left', () => eventsOf(room).some((e) => e.event === 'participant_left'));

    const first = receiver.requests.slice(0, 3).map((r) => r.event);
    expect(first.map((e) => e?.event)).toEqual(['room_started', 'room_started', 'room_started']);
    expect(new Set(first.map((e) => e?.id)).size).toBe(1);
    expect(eventsOf(room).map((e) => e.event)).toEqual(['room_started', 'participant_joined', 'participant_left']);
  });

  it('a participant whose media never connects is reported as participant_connection_aborted, not left', async () => {
    const { url, token, eventsOf } = await setup();
    const room = 'hook-room-aborted';
    // Signalling only: join over the WebSocket, read the JoinResponse, go away without any ICE.
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/rtc?access_token=${await token(room, 'ghost')}`);
    cleanups.push(async () => ws.terminate());
    await new Promise<void>((resolve, reject) => {
      ws.on('message', (data: Buffer) => {
        if (SignalResponse.fromBinary(new Uint8Array(data)).message.case === 'join') resolve();
      });
      ws.once('error', reject);
    });
    ws.close();
    await waitFor('participant_connection_aborted', () =>
      eventsOf(room).some((e) => e.event === 'participant_connection_aborted'),
    );
    const events = eventsOf(room).map((e) => e.event);
    expect(events).not.toContain('participant_joined');
    expect(events).not.toContain('participant_left');
    expect(eventsOf(room).find((e) => e.event === 'participant_connection_aborted')?.participant?.identity).toBe('ghost');
  });

  it('counts deliveries and failed attempts on /metrics without room or user labels', async () => {
    const { api, sfu, eventsOf } = await setup((n) => (n === 1 ? 500 : 200));
    const room = 'hook-room-3';
    await api.createRoom({ name: room });
    await waitFor('room_started', () => eventsOf(room).length === 1);
    // The notifier counts a delivery once the receiver's answer is back, a moment after the
    // receiver saw the body: wait for the count rather than race it.
    const delivered = /matrixrtc_sfu_webhook_deliveries_total\{event="room_started"\} 1/;
    const text = await waitFor('the delivery counted', async () => {
      const t = await sfu.metrics.metrics();
      return delivered.test(t) ? t : undefined;
    });
    expect(text).toMatch(delivered);
    expect(text).toMatch(/matrixrtc_sfu_webhook_attempt_failures_total\{reason="status"\} 1/);
    expect(text).toMatch(/^livekit_room_total 1$/m);
    expect(text).not.toContain(room);
  });
});
