/**
 * The RoomService Twirp edge against livekit-server-sdk's RoomServiceClient (JSON), hand-encoded
 * protobuf requests as server-sdk-go sends them, and raw HTTP for the error table. The backend
 * is the in-memory contract double (the session layer's room manager is tested elsewhere).
 */
import { createServer, type Server } from 'node:http';
import {
  CreateRoomRequest,
  DataPacket_Kind,
  ParticipantInfo,
  Room,
  RoomParticipantIdentity,
  TrackInfo,
  TrackType,
} from '@livekit/protocol';
import express from 'express';
import { AccessToken, RoomServiceClient, TwirpError, type VideoGrant } from 'livekit-server-sdk';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../common/clock.ts';
import { closeServer, listen, urlOf } from '../../common/http.ts';
import { createSilentLogger } from '../../common/logger.ts';
import { createSfuMetrics } from '../metrics.ts';
import { createContractBackend, type ContractBackend } from '../../test/support/contract-backend.ts';
import { createRoomServiceHandler } from './router.ts';

const KEY = 'APIkey';
const SECRET = 's'.repeat(40);
const OTHER = { key: 'other', secret: 'o'.repeat(40) };

let server: Server;
let url: string;
let backend: ContractBackend;
let client: RoomServiceClient;
let registry: Registry;

beforeAll(async () => {
  const app = express();
  registry = new Registry();
  const metrics = createSfuMetrics(registry);
  app.use(
    '/twirp',
    createRoomServiceHandler({
      get backend() {
        return backend;
      },
      keys: { [KEY]: SECRET, [OTHER.key]: OTHER.secret },
      clock: systemClock,
      logger: createSilentLogger(),
      metrics: metrics.twirp,
    }),
  );
  server = createServer(app);
  url = urlOf(await listen(server, '127.0.0.1', 0));
  client = new RoomServiceClient(url, KEY, SECRET);
});

afterAll(async () => {
  await closeServer(server);
});

beforeEach(() => {
  backend = createContractBackend({ nowMs: () => Date.now() });
});

async function token(grant: VideoGrant, opts: { key?: string; secret?: string; ttl?: number } = {}): Promise<string> {
  const at = new AccessToken(opts.key ?? KEY, opts.secret ?? SECRET, {
    ttl: opts.ttl ?? 600,
    // The SDK refuses a join grant without an identity.
    ...(grant.roomJoin ? { identity: 'someone' } : {}),
  });
  at.addGrant(grant);
  return await at.toJwt();
}

async function post(method: string, body: unknown, headers: Record<string, string>): Promise<Response> {
  return await fetch(`${url}/twirp/livekit.RoomService/${method}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : body instanceof Uint8Array ? Buffer.from(body) : JSON.stringify(body),
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

async function withRoomAndAlice() {
  await backend.createRoom(new CreateRoomRequest({ name: 'r1' }));
  const alice = backend.addParticipant('r1', {
    identity: 'alice',
    name: 'Alice',
    tracks: [new TrackInfo({ sid: 'TR_a', type: TrackType.AUDIO, name: 'mic' })],
  });
  backend.calls.length = 0;
  return alice;
}

describe('RoomServiceClient (JSON) against every method', () => {
  it('creates a room with the 300 s / 20 s defaults and answers the same room when created again', async () => {
    const room = await client.createRoom({ name: 'r1', metadata: 'm' });
    expect(room.name).toBe('r1');
    expect(room.emptyTimeout).toBe(300);
    expect(room.departureTimeout).toBe(20);
    expect(room.creationTime).toBeGreaterThan(0n);
    const again = await client.createRoom({ name: 'r1', emptyTimeout: 30 });
    expect(again.sid).toBe(room.sid);
    expect(again.creationTime).toBe(room.creationTime);
    expect(again.emptyTimeout).toBe(30);
    expect(backend.calls.map((c) => c.method)).toEqual(['createRoom', 'createRoom']);
  });

  it('lists all rooms or the named ones', async () => {
    await client.createRoom({ name: 'a' });
    await client.createRoom({ name: 'b' });
    expect((await client.listRooms()).map((r) => r.name).toSorted()).toEqual(['a', 'b']);
    expect((await client.listRooms(['b'])).map((r) => r.name)).toEqual(['b']);
  });

  it('deletes a room, and answers not_found for an absent one', async () => {
    await client.createRoom({ name: 'gone' });
    await client.deleteRoom('gone');
    expect(await client.listRooms()).toEqual([]);
    const err = await rejection(client.deleteRoom('gone'));
    expect(err.code).toBe('not_found');
    expect(err.status).toBe(404);
  });

  it('lists and gets participants; a missing participant is not_found', async () => {
    await withRoomAndAlice();
    const list = await client.listParticipants('r1');
    expect(list.map((p) => p.identity)).toEqual(['alice']);
    const alice = await client.getParticipant('r1', 'alice');
    expect(alice.name).toBe('Alice');
    expect(alice.tracks[0]?.sid).toBe('TR_a');
    const err = await rejection(client.getParticipant('r1', 'bob'));
    expect(err.code).toBe('not_found');
    expect(err.status).toBe(404);
  });

  it('removes a participant and passes revoke_token_ts through', async () => {
    await withRoomAndAlice();
    await client.removeParticipant('r1', 'alice', { revokeTokenTs: 1_700_000_123n } as never);
    expect(backend.calls).toEqual([{ method: 'removeParticipant', args: ['r1', 'alice', 1_700_000_123n] }]);
    const err = await rejection(client.removeParticipant('r1', 'alice'));
    expect(err.code).toBe('not_found');
  });

  it('mutes a published track and answers the track', async () => {
    await withRoomAndAlice();
    const track = await client.mutePublishedTrack('r1', 'alice', 'TR_a', true);
    expect(track?.sid).toBe('TR_a');
    expect(track?.muted).toBe(true);
    expect(backend.calls[0]?.args).toEqual(['r1', 'alice', 'TR_a', true]);
  });

  it('updates metadata, name, permission and attributes, leaving empty fields unchanged', async () => {
    await withRoomAndAlice();
    const p = await client.updateParticipant('r1', 'alice', {
      metadata: 'md',
      attributes: { a: '1' },
      permission: { canPublish: false, canSubscribe: true, canPublishData: false, canUpdateMetadata: false },
    });
    expect(p.metadata).toBe('md');
    expect(p.attributes).toEqual({ a: '1' });
    expect(p.permission?.canSubscribe).toBe(true);
    const update = backend.calls[0]?.args[2] as Record<string, unknown>;
    expect(Object.keys(update).toSorted()).toEqual(['attributes', 'metadata', 'permission']);
    const renamed = await client.updateParticipant('r1', 'alice', { name: 'Alicia' });
    expect(renamed.name).toBe('Alicia');
    expect(renamed.metadata).toBe('md');
  });

  it('updates subscriptions', async () => {
    await withRoomAndAlice();
    await client.updateSubscriptions('r1', 'alice', ['TR_x'], false);
    expect(backend.calls[0]).toEqual({
      method: 'updateSubscriptions',
      args: ['r1', 'alice', ['TR_x'], false, []],
    });
  });

  it('sends data with kind, topic and destinations; sid destinations resolve to identities', async () => {
    const alice = await withRoomAndAlice();
    const data = new TextEncoder().encode('hello');
    await client.sendData('r1', data, DataPacket_Kind.RELIABLE as never, { topic: 't', destinationIdentities: ['bob'] });
    await client.sendData('r1', data, DataPacket_Kind.LOSSY as never, { destinationSids: [alice.sid] });
    const sends = backend.calls.filter((c) => c.method === 'sendData').map((c) => c.args[1]);
    expect(sends).toEqual([
      { data, kind: DataPacket_Kind.RELIABLE, destinationIdentities: ['bob'], topic: 't' },
      { data, kind: DataPacket_Kind.LOSSY, destinationIdentities: ['alice'] },
    ]);
  });

  it('updates room metadata and answers the room', async () => {
    await withRoomAndAlice();
    const room = await client.updateRoomMetadata('r1', '{"x":1}');
    expect(room.metadata).toBe('{"x":1}');
  });
});

describe('protobuf encoding, as server-sdk-go sends it', () => {
  const headers = async (grant: VideoGrant) => ({
    'Content-Type': 'application/protobuf',
    Authorization: `Bearer ${await token(grant)}`,
  });

  it('creates a room and reads creation_time from the binary answer', async () => {
    const req = new CreateRoomRequest({ name: 'pb', emptyTimeout: 300, departureTimeout: 20, maxParticipants: 0 });
    const res = await post('CreateRoom', req.toBinary(), await headers({ roomCreate: true }));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/protobuf');
    const room = Room.fromBinary(new Uint8Array(await res.arrayBuffer()));
    expect(room.name).toBe('pb');
    expect(room.emptyTimeout).toBe(300);
    expect(room.creationTime).toBeGreaterThan(0n);
  });

  it('gets a participant, and answers Twirp JSON not_found for a missing one', async () => {
    await withRoomAndAlice();
    const h = await headers({ roomAdmin: true, room: 'r1' });
    const ok = await post('GetParticipant', new RoomParticipantIdentity({ room: 'r1', identity: 'alice' }).toBinary(), h);
    expect(ok.status).toBe(200);
    expect(ParticipantInfo.fromBinary(new Uint8Array(await ok.arrayBuffer())).identity).toBe('alice');
    const missing = await post('GetParticipant', new RoomParticipantIdentity({ room: 'r1', identity: 'zed' }).toBinary(), h);
    expect(missing.status).toBe(404);
    expect(missing.headers.get('content-type')).toBe('application/json');
    expect(await missing.json()).toMatchObject({ code: 'not_found' });
  });

  it('reads revoke_token_ts (field 3), which our protocol version does not define', async () => {
    await withRoomAndAlice();
    // RoomParticipantIdentity{room:"r1", identity:"alice"} followed by field 3 varint 1700000000.
    const base = new RoomParticipantIdentity({ room: 'r1', identity: 'alice' }).toBinary();
    const extra = [0x18, 0x80, 0xe2, 0xcf, 0xaa, 0x06];
    const body = new Uint8Array([...base, ...extra]);
    const res = await post('RemoveParticipant', body, await headers({ roomAdmin: true, room: 'r1' }));
    expect(res.status).toBe(200);
    expect(backend.calls[0]?.args).toEqual(['r1', 'alice', 1_700_000_000n]);
  });
});

describe('JSON wire format', () => {
  it('answers snake_case names with defaults emitted and int64 as strings', async () => {
    const res = await post('CreateRoom', { name: 'j' }, { Authorization: `Bearer ${await token({ roomCreate: true })}` });
    expect(res.headers.get('content-type')).toBe('application/json');
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ name: 'j', empty_timeout: 300, departure_timeout: 20, max_participants: 0, metadata: '' });
    expect(typeof body.creation_time).toBe('string');
    expect(typeof body.creation_time_ms).toBe('string');
    expect(body).not.toHaveProperty('emptyTimeout');
  });

  it('accepts snake_case request fields as Go protojson writes them', async () => {
    const res = await post(
      'CreateRoom',
      { name: 'snake', empty_timeout: 42, departure_timeout: 7 },
      { Authorization: `Bearer ${await token({ roomCreate: true })}` },
    );
    expect(await res.json()).toMatchObject({ empty_timeout: 42, departure_timeout: 7 });
  });
});

describe('authentication and grants', () => {
  const cases: [method: string, body: Record<string, unknown>, lacking: VideoGrant][] = [
    ['CreateRoom', { name: 'r1' }, { roomList: true, roomAdmin: true, room: 'r1' }],
    ['ListRooms', {}, { roomCreate: true, roomAdmin: true, room: 'r1' }],
    ['DeleteRoom', { room: 'r1' }, { roomList: true, roomAdmin: true, room: 'r1' }],
    ['ListParticipants', { room: 'r1' }, { roomCreate: true, roomList: true }],
    ['GetParticipant', { room: 'r1', identity: 'alice' }, { roomAdmin: true, room: 'other' }],
    ['RemoveParticipant', { room: 'r1', identity: 'alice' }, { roomAdmin: false, room: 'r1' }],
    ['MutePublishedTrack', { room: 'r1', identity: 'alice', trackSid: 'TR_a', muted: true }, { roomJoin: true, room: 'r1' }],
    ['UpdateParticipant', { room: 'r1', identity: 'alice', metadata: 'x' }, { roomCreate: true, room: 'r1' }],
    ['UpdateSubscriptions', { room: 'r1', identity: 'alice', trackSids: [] }, { roomAdmin: true }],
    ['SendData', { room: 'r1', data: 'aGk=' }, { roomList: true, room: 'r1' }],
    ['UpdateRoomMetadata', { room: 'r1', metadata: 'x' }, { roomAdmin: true, room: 'r2' }],
  ];

  it.each(cases)('%s without its grant answers Twirp unauthenticated and reaches no backend', async (method, body, lacking) => {
    await withRoomAndAlice();
    const res = await post(method, body, { Authorization: `Bearer ${await token(lacking)}` });
    expect(res.status).toBe(401);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(await res.json()).toEqual({ code: 'unauthenticated', msg: 'permissions denied', meta: {} });
    expect(backend.calls).toEqual([]);
  });

  it('the node SDK sees a missing grant as a TwirpError with code unauthenticated', async () => {
    // A valid token whose grant is for another room.
    const err = await rejection(
      new RoomServiceClient(url, KEY, SECRET, { token: await token({ roomAdmin: true, room: 'x' }) }).listParticipants('r1'),
    );
    expect(err.code).toBe('unauthenticated');
    expect(err.status).toBe(401);
  });

  it('answers a request without a token with Twirp unauthenticated', async () => {
    const res = await post('ListRooms', {}, {});
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ code: 'unauthenticated' });
  });

  it.each([
    ['an expired token', async () => `Bearer ${await token({ roomList: true }, { ttl: -120 })}`, 'expired'],
    ['a bad signature', async () => `Bearer ${await token({ roomList: true }, { secret: 'x'.repeat(40) })}`, 'invalid authorization token'],
    ['an unknown API key', async () => `Bearer ${await token({ roomList: true }, { key: 'nokey' })}`, 'invalid API key'],
    ['a header without Bearer', async () => await token({ roomList: true }), 'Must start with Bearer'],
    ['garbage', async () => 'Bearer not.a.jwt', 'invalid authorization token'],
  ])('answers %s with a plain-text 401 before Twirp', async (_name, header, text) => {
    const res = await post('ListRooms', {}, { Authorization: await header() });
    expect(res.status).toBe(401);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(await res.text()).toContain(text);
  });

  it('accepts a token only within the 60 s leeway after expiry', async () => {
    // ttl -30 s: expired 30 s ago, inside the leeway.
    const res = await post('ListRooms', {}, { Authorization: `Bearer ${await token({ roomList: true }, { ttl: -30 })}` });
    expect(res.status).toBe(200);
  });

  it('accepts tokens signed by any configured key', async () => {
    const other = new RoomServiceClient(url, OTHER.key, OTHER.secret);
    expect(await other.listRooms()).toEqual([]);
  });
});

describe('Twirp error table', () => {
  const auth = async () => ({ Authorization: `Bearer ${await token({ roomCreate: true, roomList: true })}` });

  it('answers bad_route 404 for an unknown method, another service or a GET', async () => {
    for (const path of ['livekit.RoomService/Nope', 'livekit.Egress/ListEgress', 'livekit.RoomService/constructor']) {
      const res = await fetch(`${url}/twirp/${path}`, { method: 'POST', headers: { 'Content-Type': 'application/json', ...(await auth()) }, body: '{}' });
      expect(res.status).toBe(404);
      expect(await res.json()).toMatchObject({ code: 'bad_route' });
    }
    const get = await fetch(`${url}/twirp/livekit.RoomService/ListRooms`, { headers: await auth() });
    expect(get.status).toBe(404);
    expect(await get.json()).toMatchObject({ code: 'bad_route' });
  });

  it('answers bad_route for an unsupported Content-Type', async () => {
    const res = await post('ListRooms', '{}', { ...(await auth()), 'Content-Type': 'text/plain' });
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ code: 'bad_route', msg: expect.stringContaining('Content-Type') });
  });

  it('answers malformed 400 for a body that does not decode', async () => {
    for (const body of ['{not json', '[1]', '{"name": 5}']) {
      const res = await post('CreateRoom', body, await auth());
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ code: 'malformed' });
    }
    const pb = await post('CreateRoom', new Uint8Array([0x0a, 0x09, 0x61]), { ...(await auth()), 'Content-Type': 'application/protobuf' });
    expect(pb.status).toBe(400);
    expect(await pb.json()).toMatchObject({ code: 'malformed' });
  });

  it('answers invalid_argument for a missing room name and a bad nonce', async () => {
    const res = await post('CreateRoom', { name: '' }, await auth());
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ code: 'invalid_argument', meta: { argument: 'name' } });
    await withRoomAndAlice();
    const bad = await post(
      'SendData',
      { room: 'r1', data: 'aGk=', nonce: 'AAEC' },
      { Authorization: `Bearer ${await token({ roomAdmin: true, room: 'r1' })}` },
    );
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ code: 'invalid_argument', meta: { argument: 'nonce' } });
  });

  it('answers internal 500 without the exception text when the backend fails unexpectedly', async () => {
    backend.failWith = new Error('secret detail');
    const res = await post('ListRooms', {}, await auth());
    expect(res.status).toBe(500);
    const body = await res.json();
    expect(body).toEqual({ code: 'internal', msg: 'internal error', meta: {} });
  });

  it('counts requests by method and outcome, without room labels', async () => {
    await post('ListRooms', {}, await auth());
    await post('GetParticipant', { room: 'r1', identity: 'x' }, await auth());
    const text = await registry.metrics();
    expect(text).toMatch(/livekit_twirp_request_status\{method="ListRooms",code="ok"\} \d+/);
    expect(text).toMatch(/livekit_twirp_request_status\{method="GetParticipant",code="unauthenticated"\} \d+/);
    expect(text).not.toContain('r1');
  });
});
