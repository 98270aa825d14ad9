/**
 * The RoomService API of a real SFU (sfu/server.ts: Twirp edge over the session layer), driven
 * by livekit-server-sdk's RoomServiceClient, with real @livekit/rtc-node participants wherever a
 * method affects them; plus the protobuf encoding as server-sdk-go (lk-jwt-service) sends it and
 * the Twirp error for a token lacking each method's grant.
 */
import { ParticipantInfo, Room as RoomMessage, RoomParticipantIdentity, CreateRoomRequest } from '@livekit/protocol';
import { DisconnectReason, RoomEvent } from '@livekit/rtc-node';
import { AccessToken, DataPacket_Kind, RoomServiceClient, TwirpError, type VideoGrant } from 'livekit-server-sdk';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectRtcNode, type RtcNodeClient } from '../support/rtc-node.ts';
import { startTestSfu, TEST_API_KEY, TEST_API_SECRET, type TestSfu } from '../support/sfu-harness.ts';
import { waitFor } from '../support/wait.ts';

let sfu: TestSfu;
let api: RoomServiceClient;
const clients: RtcNodeClient[] = [];
let roomSeq = 0;

beforeAll(async () => {
  sfu = await startTestSfu();
  api = new RoomServiceClient(sfu.url, TEST_API_KEY, TEST_API_SECRET);
});

afterEach(async () => {
  for (const c of clients.splice(0)) await c.disconnect();
});

afterAll(async () => {
  await sfu.stop();
});

function freshRoom(): string {
  return `rs-room-${process.pid}-${++roomSeq}`;
}

async function join(room: string, identity: string, opts: { token?: string } = {}): Promise<RtcNodeClient> {
  const token = opts.token ?? (await sfu.token(identity, { roomJoin: true, room }));
  const client = await connectRtcNode(sfu.wsUrl, token);
  clients.push(client);
  return client;
}

function onceRoomEvent<T extends unknown[]>(client: RtcNodeClient, event: RoomEvent, match: (...args: T) => boolean, timeoutMs = 10_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const listener = (...args: unknown[]) => {
      if (!match(...(args as T))) return;
      clearTimeout(timer);
      client.room.off(event, listener as never);
      resolve(args as T);
    };
    const timer = setTimeout(() => {
      client.room.off(event, listener as never);
      reject(new Error(`timed out waiting for ${event} at ${client.identity}`));
    }, timeoutMs);
    client.room.on(event, listener as never);
  });
}

async function rejection(p: Promise<unknown>): Promise<TwirpError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TwirpError);
  return err as TwirpError;
}

describe('RoomService over JSON with real participants', () => {
  it('creates a room with LiveKit defaults, idempotently, and lists it with its participants', async () => {
    const name = freshRoom();
    const created = await api.createRoom({ name });
    expect(created.emptyTimeout).toBe(300);
    expect(created.departureTimeout).toBe(20);
    expect(created.creationTime).toBeGreaterThan(0n);
    const again = await api.createRoom({ name, emptyTimeout: 300, departureTimeout: 20, maxParticipants: 0 });
    expect(again.sid).toBe(created.sid);
    expect(again.creationTime).toBe(created.creationTime);

    await join(name, 'alice');
    const listed = await api.listRooms([name]);
    expect(listed.map((r) => r.sid)).toEqual([created.sid]);
    expect((await api.listRooms()).some((r) => r.name === name)).toBe(true);
    await waitFor('alice listed', async () => (await api.listParticipants(name)).some((p) => p.identity === 'alice'));
    const alice = await api.getParticipant(name, 'alice');
    expect(alice.identity).toBe('alice');
    expect(alice.sid).toMatch(/^PA_/);
    const missing = await rejection(api.getParticipant(name, 'nobody'));
    expect(missing.code).toBe('not_found');
    expect(missing.status).toBe(404);
  });

  it('UpdateParticipant changes metadata, name and attributes and the other client sees it', async () => {
    const name = freshRoom();
    await join(name, 'alice');
    const bob = await join(name, 'bob');
    await waitFor('bob sees alice', () => bob.room.remoteParticipants.has('alice'));
    const seen = bob.waitForEvent('participantMetadataChanged', (_md, p) => p.identity === 'alice');
    const updated = await api.updateParticipant(name, 'alice', { metadata: 'md-1', name: 'Alice A', attributes: { role: 'host' } });
    expect(updated.metadata).toBe('md-1');
    expect(updated.name).toBe('Alice A');
    expect(updated.attributes).toEqual({ role: 'host' });
    const [metadata] = await seen;
    expect(metadata).toBe('md-1');
    await waitFor('attributes at bob', () => bob.room.remoteParticipants.get('alice')?.attributes.role === 'host');
  });

  it('UpdateRoomMetadata answers the room and reaches the clients', async () => {
    const name = freshRoom();
    const bob = await join(name, 'bob');
    const seen = onceRoomEvent<[string]>(bob, RoomEvent.RoomMetadataChanged, (md) => md === '{"topic":"standup"}');
    const room = await api.updateRoomMetadata(name, '{"topic":"standup"}');
    expect(room.metadata).toBe('{"topic":"standup"}');
    await seen;
  });

  it('SendData delivers to the addressed participant with its topic', async () => {
    const name = freshRoom();
    await join(name, 'alice');
    const bob = await join(name, 'bob');
    const got = bob.waitForEvent('dataReceived', (_payload, _p, _kind, topic) => topic === 'ops');
    await api.sendData(name, new TextEncoder().encode('ping'), DataPacket_Kind.RELIABLE, {
      topic: 'ops',
      destinationIdentities: ['bob'],
    });
    const [payload] = await got;
    expect(new TextDecoder().decode(payload)).toBe('ping');
  });

  it('MutePublishedTrack mutes a published track and the subscriber sees it muted', async () => {
    const name = freshRoom();
    const alice = await join(name, 'alice');
    const bob = await join(name, 'bob');
    const subscribed = bob.waitForEvent('trackSubscribed', (_t, _pub, p) => p.identity === 'alice');
    const tone = await alice.publishTone(440);
    await subscribed;
    const sid = tone.publication.sid!;
    const muted = bob.waitForEvent('trackMuted', (pub) => pub.sid === sid);
    const track = await api.mutePublishedTrack(name, 'alice', sid, true);
    expect(track?.sid).toBe(sid);
    expect(track?.muted).toBe(true);
    await muted;
    expect((await api.getParticipant(name, 'alice')).tracks.find((t) => t.sid === sid)?.muted).toBe(true);
  });

  it('UpdateSubscriptions subscribes a participant who joined without auto-subscribe', async () => {
    const name = freshRoom();
    const alice = await join(name, 'alice');
    const bob = await connectRtcNode(sfu.wsUrl, await sfu.token('bob', { roomJoin: true, room: name }), { autoSubscribe: false });
    clients.push(bob);
    const announced = bob.waitForEvent('trackPublished', (_pub, p) => p.identity === 'alice');
    const tone = await alice.publishTone(440);
    await announced;
    const sid = tone.publication.sid!;
    const subscribed = bob.waitForEvent('trackSubscribed', (_t, pub) => pub.sid === sid);
    await api.updateSubscriptions(name, 'bob', [sid], true);
    await subscribed;
    const missing = await rejection(api.updateSubscriptions(name, 'nobody', [sid], true));
    expect(missing.code).toBe('not_found');
  });

  it('RemoveParticipant disconnects with PARTICIPANT_REMOVED and, with revoke_token_ts, the token cannot rejoin', async () => {
    const name = freshRoom();
    const token = await sfu.token('alice', { roomJoin: true, room: name });
    const alice = await join(name, 'alice', { token });
    const gone = alice.waitForEvent('disconnected');
    await api.removeParticipant(name, 'alice', { revokeTokenTs: BigInt(Math.floor(Date.now() / 1000) + 1) } as never);
    const [reason] = await gone;
    expect(reason).toBe(DisconnectReason.PARTICIPANT_REMOVED);
    await waitFor('alice gone', async () => !(await api.listParticipants(name)).some((p) => p.identity === 'alice'));
    await expect(connectRtcNode(sfu.wsUrl, token)).rejects.toThrow();
    const missing = await rejection(api.removeParticipant(name, 'alice'));
    expect(missing.code).toBe('not_found');
  });

  it('DeleteRoom disconnects everyone with ROOM_DELETED and the room is gone', async () => {
    const name = freshRoom();
    const alice = await join(name, 'alice');
    const bob = await join(name, 'bob');
    const reasons = Promise.all([alice.waitForEvent('disconnected'), bob.waitForEvent('disconnected')]);
    await api.deleteRoom(name);
    expect((await reasons).map(([r]) => r)).toEqual([DisconnectReason.ROOM_DELETED, DisconnectReason.ROOM_DELETED]);
    expect(await api.listRooms([name])).toEqual([]);
    expect((await rejection(api.deleteRoom(name))).code).toBe('not_found');
  });
});

describe('RoomService over protobuf, as server-sdk-go sends it', () => {
  async function postProto(method: string, body: Uint8Array, grant: VideoGrant): Promise<Response> {
    const at = new AccessToken(TEST_API_KEY, TEST_API_SECRET, { ttl: 600 });
    at.addGrant(grant);
    return await fetch(`${sfu.url}/twirp/livekit.RoomService/${method}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/protobuf', Authorization: `Bearer ${await at.toJwt()}` },
      body: Buffer.from(body),
    });
  }

  it('CreateRoom (300/20/0, as lk-jwt-service sends it) and GetParticipant of a joined participant; not_found when absent', async () => {
    const name = freshRoom();
    const create = new CreateRoomRequest({ name, emptyTimeout: 300, departureTimeout: 20, maxParticipants: 0 });
    const res = await postProto('CreateRoom', create.toBinary(), { roomCreate: true });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/protobuf');
    const room = RoomMessage.fromBinary(new Uint8Array(await res.arrayBuffer()));
    expect(room.name).toBe(name);
    expect(room.creationTime).toBeGreaterThan(0n);

    await join(name, 'carol');
    const get = await postProto('GetParticipant', new RoomParticipantIdentity({ room: name, identity: 'carol' }).toBinary(), {
      roomAdmin: true,
      room: name,
    });
    expect(get.status).toBe(200);
    expect(ParticipantInfo.fromBinary(new Uint8Array(await get.arrayBuffer())).identity).toBe('carol');

    const absent = await postProto('GetParticipant', new RoomParticipantIdentity({ room: name, identity: 'dave' }).toBinary(), {
      roomAdmin: true,
      room: name,
    });
    expect(absent.status).toBe(404);
    expect(await absent.json()).toMatchObject({ code: 'not_found' });
  });
});

describe('grants', () => {
  const room = 'grant-room';
  const cases: [string, (c: RoomServiceClient) => Promise<unknown>, VideoGrant][] = [
    ['CreateRoom', (c) => c.createRoom({ name: room }), { roomList: true }],
    ['ListRooms', (c) => c.listRooms(), { roomCreate: true }],
    ['DeleteRoom', (c) => c.deleteRoom(room), { roomAdmin: true, room }],
    ['ListParticipants', (c) => c.listParticipants(room), { roomAdmin: true, room: 'elsewhere' }],
    ['GetParticipant', (c) => c.getParticipant(room, 'x'), { roomCreate: true, roomList: true }],
    ['RemoveParticipant', (c) => c.removeParticipant(room, 'x'), { room }],
    ['MutePublishedTrack', (c) => c.mutePublishedTrack(room, 'x', 'TR_x', true), { roomAdmin: true }],
    ['UpdateParticipant', (c) => c.updateParticipant(room, 'x', { metadata: 'm' }), { roomRecord: true, room }],
    ['UpdateSubscriptions', (c) => c.updateSubscriptions(room, 'x', [], true), { roomAdmin: false, room }],
    ['SendData', (c) => c.sendData(room, new Uint8Array([1]), DataPacket_Kind.RELIABLE, {}), { roomCreate: true, room }],
    ['UpdateRoomMetadata', (c) => c.updateRoomMetadata(room, 'm'), { roomAdmin: true, room: 'elsewhere' }],
  ];

  it.each(cases)('%s with a token lacking its grant answers Twirp unauthenticated', async (_m, call, grant) => {
    const at = new AccessToken(TEST_API_KEY, TEST_API_SECRET, { ttl: 600 });
    at.addGrant(grant);
    const client = new RoomServiceClient(sfu.url, TEST_API_KEY, TEST_API_SECRET, { token: await at.toJwt() } as never);
    const err = await rejection(call(client));
    expect(err.code).toBe('unauthenticated');
    expect(err.status).toBe(401);
  });

  it('an expired token is refused with a plain-text 401 before Twirp', async () => {
    const at = new AccessToken(TEST_API_KEY, TEST_API_SECRET, { ttl: -120 });
    at.addGrant({ roomList: true });
    const client = new RoomServiceClient(sfu.url, TEST_API_KEY, TEST_API_SECRET, { token: await at.toJwt() } as never);
    const err = await rejection(client.listRooms());
    expect(err.status).toBe(401);
    expect(err.code).toBeUndefined();
    expect(err.message).toContain('expired');
  });
});
