/**
 * RoomService Twirp bodies (sfu/twirp/codec.ts, room-service.ts) into a real room manager:
 * for every method, valid requests in both encodings mutated as bytes, generated JSON objects
 * with LiveKit's field names holding any value, and arbitrary bytes; decoded, authorised with
 * an admin grant for the named room (so the backend is reached) and handled. Bad input must be
 * a TwirpError or RoomServiceError, which the router turns into Twirp error JSON. Rooms the
 * cases create are deleted every 500 cases, as an operator's cleanup would.
 */
import fc from 'fast-check';
import type { Message } from '@bufbuild/protobuf';
import { systemClock } from '../../../common/clock.ts';
import { createSilentLogger } from '../../../common/logger.ts';
import { parseSfuConfig } from '../../../sfu/config.ts';
import { createWeriftTransportFactory } from '../../../sfu/media/transport.ts';
import { RoomServiceError } from '../../../sfu/room-service-api.ts';
import { createRoomManager } from '../../../sfu/rtc/room-manager.ts';
import { decodeRequest, type Encoding } from '../../../sfu/twirp/codec.ts';
import { TwirpError } from '../../../sfu/twirp/errors.ts';
import { ROOM_SERVICE_METHODS } from '../../../sfu/twirp/room-service.ts';
import { mutatedBytes, type FuzzTarget } from '../target.ts';

const METHODS = Object.keys(ROOM_SERVICE_METHODS).toSorted();
const ROOMS = ['fuzz-a', 'fuzz-b', ''];
const SAMPLES: Record<string, unknown>[] = [
  { name: 'fuzz-a', emptyTimeout: 30, departureTimeout: 30, maxParticipants: 10, metadata: 'm' },
  { room: 'fuzz-a' },
  { room: 'fuzz-a', identity: 'alice', revokeTokenTs: '1700000000' },
  { room: 'fuzz-a', identity: 'alice', metadata: 'x', attributes: { a: 'b' }, permission: { canPublish: true } },
  { room: 'fuzz-a', data: 'aGVsbG8=', kind: 'RELIABLE', destinationIdentities: ['bob'], topic: 't' },
  { room: 'fuzz-a', identity: 'alice', trackSid: 'TR_x', muted: true },
  { room: 'fuzz-a', identity: 'alice', trackSids: ['TR_x'], subscribe: true },
  { names: ['fuzz-a', 'fuzz-b'] },
];

type Input = { method: string; encoding: Encoding; body: Uint8Array };

export const twirpBody: FuzzTarget<Input> = {
  name: 'twirp-body',
  description: 'RoomService Twirp bodies (JSON and protobuf, every method) decoded, authorised and handled by a real room manager',
  async: true,
  arbitrary() {
    const corpus: Uint8Array[] = [];
    for (const m of METHODS) {
      const type = ROOM_SERVICE_METHODS[m]!.request;
      for (const s of SAMPLES) {
        try {
          const msg = type.fromJson(s as never, { ignoreUnknownFields: true }) as Message;
          corpus.push(msg.toBinary());
          corpus.push(Buffer.from(msg.toJsonString()));
        } catch {
          corpus.push(Buffer.from(JSON.stringify(s)));
        }
      }
    }
    const field = fc.constantFrom('room', 'name', 'identity', 'metadata', 'attributes', 'data', 'kind', 'trackSid', 'trackSids', 'names', 'emptyTimeout', 'revokeTokenTs', 'permission', 'destinationIdentities', 'maxParticipants', 'muted', 'subscribe', 'participantTracks', 'agents', 'egress');
    const generated = fc.dictionary(field, fc.jsonValue({ maxDepth: 2 }), { maxKeys: 6 }).map((o) => Buffer.from(JSON.stringify(o)));
    return fc.record({
      method: fc.constantFrom(...METHODS),
      encoding: fc.constantFrom<Encoding>('json', 'protobuf'),
      body: fc.oneof({ weight: 4, arbitrary: mutatedBytes(corpus) }, { weight: 3, arbitrary: generated }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }) }),
    });
  },
  async setup() {
    const config = parseSfuConfig({ keys: { fuzzkey: 'fuzz-secret-0123456789abcdef-0123456789' }, rtc: { node_ip: '127.0.0.1', port_range_start: 41000, port_range_end: 41100 }, room: { auto_create: true } }, 'fuzz');
    const logger = createSilentLogger();
    const transportFactory = createWeriftTransportFactory({ config: { portRange: [41000, 41100], nodeIp: '127.0.0.1' }, logger, clock: systemClock });
    const rooms = createRoomManager({ config, logger, clock: systemClock, transportFactory });
    let handled = 0;
    let n = 0;
    const sweep = async () => {
      for (const r of await rooms.listRooms([])) await rooms.deleteRoom(r.name);
    };
    return {
      async one({ method, encoding, body }) {
        if (++n % 500 === 0) await sweep();
        const spec = ROOM_SERVICE_METHODS[method]!;
        const decoded = decodeRequest(spec.request, encoding, Buffer.from(body));
        const room = String((decoded.message as { room?: unknown; name?: unknown }).room ?? (decoded.message as { name?: unknown }).name ?? ROOMS[0]);
        spec.authorize({ apiKey: 'fuzzkey', video: { roomAdmin: true, roomCreate: true, roomList: true, room } }, decoded.message);
        await spec.handle(rooms, decoded);
        handled++;
      },
      expected: (err) => err instanceof TwirpError || err instanceof RoomServiceError,
      async teardown() {
        await sweep();
      },
      stats: () => ({ handled }),
    };
  },
};
