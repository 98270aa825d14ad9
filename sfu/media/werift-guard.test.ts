/**
 * The media guard's DTLS record filter after the handshake: which records of a datagram reach
 * werift (table-driven), and that the guard finds werift's private shape it was written for.
 */
import { describe, expect, it } from 'vitest';
import { acceptedDtlsRecords, createWeriftGuard } from './werift-guard.ts';
import { createSilentLogger } from '../../common/logger.ts';

function record(type: number, epoch: number, fragment: Buffer): Buffer {
  const header = Buffer.alloc(13);
  header[0] = type;
  header[1] = 0xfe;
  header[2] = 0xfd;
  header.writeUInt16BE(epoch, 3);
  header.writeUIntBE(7, 5, 6);
  header.writeUInt16BE(fragment.length, 11);
  return Buffer.concat([header, fragment]);
}

/** Stands in for werift's session cipher: records whose fragment starts with 0xaa "decrypt". */
const socket = {
  connected: true,
  cipher: {
    decryptPacket(r: { fragment: Buffer }): Buffer {
      if (r.fragment[0] !== 0xaa) throw new Error('bad record mac');
      return Buffer.from([1, 0]);
    },
  },
};

const AUTHENTIC = Buffer.from([0xaa, 1, 2, 3]);
const FORGED = Buffer.from([1, 0]);

describe('acceptedDtlsRecords after the handshake', () => {
  it.each([
    ['plaintext warning alert (epoch 0)', [record(21, 0, FORGED)], []],
    ['plaintext alert claiming epoch 1', [record(21, 1, FORGED)], []],
    ['alert that decrypts under the session keys', [record(21, 1, AUTHENTIC)], [0]],
    ['unknown content type', [record(30, 1, AUTHENTIC)], []],
    ['plaintext ClientHello (would reset the session)', [record(22, 0, Buffer.alloc(12))], []],
    ['change_cipher_spec', [record(20, 1, Buffer.from([1]))], []],
    ['handshake at epoch 1 (the peer retransmitting its Finished)', [record(22, 1, AUTHENTIC)], [0]],
    ['application data at epoch 1', [record(23, 1, FORGED)], [0]],
    ['a forged alert bundled with application data', [record(23, 1, FORGED), record(21, 0, FORGED)], [0]],
  ])('%s', (_name, records, keptIndexes) => {
    const kept = acceptedDtlsRecords(socket, Buffer.concat(records));
    if (keptIndexes.length === 0) expect(kept).toBeUndefined();
    else expect(kept).toEqual(Buffer.concat(keptIndexes.map((i) => records[i]!)));
  });

  it('drops a truncated record', () => {
    const whole = record(23, 1, Buffer.alloc(40));
    expect(acceptedDtlsRecords(socket, whole.subarray(0, 30))).toBeUndefined();
  });
});

describe('createWeriftGuard', () => {
  it('recognises the installed werift', () => {
    expect(createWeriftGuard({ logger: createSilentLogger() }).problems).toEqual([]);
  });
});
