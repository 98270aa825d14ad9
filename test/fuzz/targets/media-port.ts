/**
 * Datagrams on the SFU's media ports (sfu/media: the werift guard, ICE, DTLS, SRTP, the RTP
 * header bound) while a real werift client holds a connected session: STUN binding requests
 * with forged integrity, DTLS records of every content type and epoch (plaintext alerts among
 * them), fake SRTP and SRTCP, recorded junk mutated byte by byte, and random bytes, all sent
 * from another loopback address (127.0.0.9) to every port of the SFU's range. Nothing may throw
 * in the process, leave a promise rejected, or end the client's session; every 20,000 cases and
 * at the end the client must still be connected and in the room.
 */
import { createSocket, type Socket } from 'node:dgram';
import fc from 'fast-check';
import { createSilentLogger } from '../../../common/logger.ts';
import { WeriftLkClient, waitConnected } from '../../../bench/_sfu-werift-client.ts';
import { startTestSfu } from '../../support/sfu-harness.ts';
import { junkDatagrams, plaintextAlert } from '../../support/udp-junk.ts';
import { mutatedBytes, type FuzzTarget } from '../target.ts';

const RANGE: [number, number] = [31300, 31309];
const CLIENT_RANGE: [number, number] = [31320, 31329];
const FOREIGN = '127.0.0.9';

function dtlsRecord(type: number, epoch: number, seq: number, body: Uint8Array): Uint8Array {
  const b = Buffer.alloc(13 + body.length);
  b[0] = type;
  b.writeUInt16BE(0xfefd, 1);
  b.writeUInt16BE(epoch, 3);
  b.writeUIntBE(seq, 5, 6);
  b.writeUInt16BE(body.length, 11);
  Buffer.from(body).copy(b, 13);
  return b;
}

function stun(type: number, attrs: { type: number; value: Uint8Array }[]): Uint8Array {
  const body = Buffer.concat(
    attrs.map((a) => {
      const pad = (4 - (a.value.length % 4)) % 4;
      const h = Buffer.alloc(4);
      h.writeUInt16BE(a.type, 0);
      h.writeUInt16BE(a.value.length, 2);
      return Buffer.concat([h, Buffer.from(a.value), Buffer.alloc(pad)]);
    }),
  );
  const h = Buffer.alloc(20);
  h.writeUInt16BE(type & 0x3fff, 0);
  h.writeUInt16BE(body.length, 2);
  h.writeUInt32BE(0x2112a442, 4);
  return Buffer.concat([h, body]);
}

type Input = { port: number; bytes: Uint8Array };

export const mediaPort: FuzzTarget<Input> = {
  name: 'media-port',
  description: 'STUN, DTLS, SRTP/SRTCP and random datagrams from a foreign loopback address onto every media port while a werift client stays connected',
  async: true,
  arbitrary() {
    const corpus = [...junkDatagrams(), ...junkDatagrams(), ...plaintextAlert()];
    const dtls = fc
      .record({ type: fc.oneof(fc.integer({ min: 20, max: 26 }), fc.integer({ min: 0, max: 255 })), epoch: fc.integer({ min: 0, max: 3 }), seq: fc.nat({ max: 2 ** 32 }), body: fc.uint8Array({ maxLength: 96 }) })
      .map((r) => dtlsRecord(r.type, r.epoch, r.seq, r.body));
    const stunMsg = fc
      .record({
        type: fc.constantFrom(0x0001, 0x0101, 0x0111, 0x0003),
        attrs: fc.array(fc.record({ type: fc.constantFrom(0x0006, 0x0008, 0x8028, 0x0024, 0x8029, 0x802a, 0x0025, 0x0020, 0x0009), value: fc.uint8Array({ maxLength: 40 }) }), { maxLength: 5 }),
      })
      .map((m) => stun(m.type, m.attrs));
    const rtpLike = fc.tuple(fc.integer({ min: 128, max: 191 }), fc.integer({ min: 0, max: 255 }), fc.uint8Array({ minLength: 2, maxLength: 200 })).map(([a, b, rest]) => Uint8Array.from([a, b, ...rest]));
    return fc.record({
      port: fc.integer({ min: RANGE[0], max: RANGE[1] }),
      bytes: fc.oneof(
        { weight: 1, arbitrary: fc.constantFrom(...corpus) },
        { weight: 3, arbitrary: mutatedBytes(corpus) },
        { weight: 2, arbitrary: dtls },
        { weight: 2, arbitrary: stunMsg },
        { weight: 2, arbitrary: rtpLike },
        { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }) },
      ),
    });
  },
  async setup() {
    const sfu = await startTestSfu({ portRange: RANGE, logger: createSilentLogger() });
    const client = await WeriftLkClient.connect(sfu.wsUrl, await sfu.token('fuzzed'), { portRange: CLIENT_RANGE });
    await waitConnected(client.sub, 'subscriber PC');
    const failures: unknown[] = [];
    const onFailure = (err: unknown) => failures.push(err);
    process.on('unhandledRejection', onFailure);
    process.on('uncaughtException', onFailure);
    const socket: Socket = createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, FOREIGN, () => resolve());
    });
    let n = 0;
    let sent = 0;
    const alive = async () => {
      // Let the SFU read what was sent before judging.
      await new Promise<void>((r) => setTimeout(r, 50));
      const state = client.sub.connectionState;
      if (state !== 'connected') throw new Error(`the client's session ended under the flood (connection state ${state})`);
      const listed = await sfu.sfu.rooms.listParticipants('test-room');
      if (!listed.some((p) => p.identity === 'fuzzed')) throw new Error('the client is no longer in the room');
    };
    return {
      async one({ port, bytes }) {
        await new Promise<void>((resolve) => socket.send(bytes, port, '127.0.0.1', () => resolve()));
        sent++;
        if (++n % 64 === 0) await new Promise<void>((r) => setImmediate(r));
        if (n % 20_000 === 0) await alive();
        if (failures.length) throw failures.shift();
      },
      expected: () => false,
      async teardown() {
        try {
          await alive();
        } finally {
          socket.close();
          process.off('unhandledRejection', onFailure);
          process.off('uncaughtException', onFailure);
          await client.close();
          await sfu.stop();
        }
      },
      stats: () => ({ sent }),
    };
  },
};
