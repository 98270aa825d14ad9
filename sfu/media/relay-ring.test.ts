/**
 * The relay ring (relay-ring.ts): what the consumer reads is exactly what was written, across
 * many wrap-arounds and across a real worker thread; a full ring refuses and counts; a packet it
 * can never hold is rejected with a clear error; the consumer is woken once per sleep.
 */
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { createRelayRing, PacketTooLargeError, RelayRingReader, RelayRingWriter } from './relay-ring.ts';
import { fnv1a } from '../../test/support/fnv1a.ts';

/** A payload of `len` bytes that differs for every `n`. */
function payload(n: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (n * 31 + i * 7) & 0xff;
  return b;
}

function readAll(reader: RelayRingReader) {
  const out: { trackId: number; stamp: number; bytes: number[] }[] = [];
  reader.drain((trackId, stamp, p) => out.push({ trackId, stamp, bytes: [...p] }));
  return out;
}

describe('relay ring', () => {
  it('hands the consumer exactly the track id, stamp and bytes that were written', () => {
    const sab = createRelayRing(4096);
    const writer = new RelayRingWriter(sab);
    const reader = new RelayRingReader(sab);
    const sizes = [0, 1, 7, 8, 9, 100, 1100];
    sizes.forEach((len, i) => expect(writer.write(i + 1, 1e12 + i / 3, payload(i, len))).toBe(true));
    const got = readAll(reader);
    expect(got).toEqual(sizes.map((len, i) => ({ trackId: i + 1, stamp: 1e12 + i / 3, bytes: [...payload(i, len)] })));
    expect(writer.written).toBe(sizes.length);
    expect(reader.usedBytes).toBe(0);
    expect(reader.hasData).toBe(false);
  });

  it('keeps packets intact across many wrap-arounds of a small ring', () => {
    const sab = createRelayRing(256);
    const writer = new RelayRingWriter(sab);
    const reader = new RelayRingReader(sab);
    let next = 0;
    let read = 0;
    for (let round = 0; round < 500; round++) {
      // Two or three packets of uneven sizes per round, so records land on every offset.
      const count = 2 + (round % 2);
      for (let k = 0; k < count; k++, next++) expect(writer.write(next, next, payload(next, (next * 13) % 60))).toBe(true);
      reader.drain((trackId, stamp, p) => {
        expect(trackId).toBe(read);
        expect(stamp).toBe(read);
        expect([...p]).toEqual([...payload(read, (read * 13) % 60)]);
        read++;
      });
    }
    expect(read).toBe(next);
    expect(writer.drops).toBe(0);
    expect(reader.usedBytes).toBe(0);
  });

  it('refuses packets while full, counts each refusal, and accepts again once drained', () => {
    const sab = createRelayRing(1024);
    const writer = new RelayRingWriter(sab);
    const reader = new RelayRingReader(sab);
    let accepted = 0;
    while (writer.write(1, 0, payload(accepted, 100))) accepted++;
    // 100-byte payload + 16-byte header = 120-byte records: 8 fit in 1024 bytes.
    expect(accepted).toBe(8);
    expect(writer.write(1, 0, payload(0, 100))).toBe(false);
    expect(writer.drops).toBe(2);
    expect(reader.drops).toBe(2);
    expect(readAll(reader)).toHaveLength(8);
    expect(writer.write(1, 0, payload(0, 100))).toBe(true);
    expect(writer.drops).toBe(2);
  });

  it('rejects a packet larger than the ring can ever hold with a clear error', () => {
    const sab = createRelayRing(512);
    const writer = new RelayRingWriter(sab);
    expect(writer.maxPacketBytes).toBe(240);
    expect(() => writer.write(1, 0, new Uint8Array(241))).toThrow(PacketTooLargeError);
    expect(() => writer.write(1, 0, new Uint8Array(241))).toThrow('a 241-byte packet does not fit a ring of 512 bytes (at most 240 bytes per packet)');
    expect(writer.drops).toBe(0);
    expect(() => createRelayRing(1000)).toThrow('power of two');
  });

  it('always takes the largest allowed packet into an empty ring, wherever the head is', () => {
    const sab = createRelayRing(512);
    const writer = new RelayRingWriter(sab);
    const reader = new RelayRingReader(sab);
    for (let shift = 0; shift < 64; shift++) {
      // Move head and tail by one 8-byte record, then the ring is empty at a new offset.
      expect(writer.write(0, 0, new Uint8Array(0))).toBe(true);
      reader.drain(() => undefined);
      expect(writer.write(2, shift, payload(shift, writer.maxPacketBytes))).toBe(true);
      const got = readAll(reader);
      expect(got).toHaveLength(1);
      expect(got[0]!.bytes).toEqual([...payload(shift, writer.maxPacketBytes)]);
    }
    expect(writer.drops).toBe(0);
  });

  it('wakes a sleeping consumer once, and only after it asked', async () => {
    const sab = createRelayRing(1024);
    let rings = 0;
    const writer = new RelayRingWriter(sab, { onWake: () => rings++ });
    const reader = new RelayRingReader(sab);
    writer.write(1, 0, payload(1, 10));
    expect(rings).toBe(0);
    expect(reader.armWake()).toBe(false); // data waiting: drain instead of sleeping
    reader.drain(() => undefined);
    expect(reader.armWake()).toBe(true);
    writer.write(1, 0, payload(2, 10));
    writer.write(1, 0, payload(3, 10));
    expect(rings).toBe(1);

    // Atomics.notify when no doorbell is given.
    const sab2 = createRelayRing(1024);
    const writer2 = new RelayRingWriter(sab2);
    const reader2 = new RelayRingReader(sab2);
    expect(reader2.armWake()).toBe(true);
    const woken = reader2.waitAsync(5000);
    writer2.write(7, 0, payload(7, 10));
    await woken;
    expect(readAll(reader2).map((p) => p.trackId)).toEqual([7]);
  });

  it('after close, refuses writes without counting drops and still hands over what was written', async () => {
    const sab = createRelayRing(1024);
    const writer = new RelayRingWriter(sab);
    const reader = new RelayRingReader(sab);
    writer.write(1, 0, payload(1, 10));
    reader.drain(() => undefined);
    expect(reader.armWake()).toBe(true);
    const woken = reader.waitAsync(5000);
    writer.write(2, 0, payload(2, 10));
    writer.close();
    await woken;
    expect(writer.write(3, 0, payload(3, 10))).toBe(false);
    expect(writer.drops).toBe(0);
    expect(reader.closed).toBe(true);
    expect(reader.armWake()).toBe(false);
    expect(readAll(reader).map((p) => p.trackId)).toEqual([2]);
  });

  it('relays every packet intact to a consumer on a real worker thread', async () => {
    const sab = createRelayRing(4096);
    const total = 5000;
    const worker = new Worker(new URL('../../test/support/relay-ring-worker.ts', import.meta.url), { workerData: { sab, expect: total } });
    try {
      const result = new Promise<{ seen: { trackId: number; stamp: number; length: number; hash: number }[]; sleeps: number }>((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      const writer = new RelayRingWriter(sab);
      const expected: { trackId: number; stamp: number; length: number; hash: number }[] = [];
      const deadline = Date.now() + 8000;
      for (let n = 0; n < total; n++) {
        const p = payload(n, (n * 37) % 1200);
        // Full: let the consumer catch up (a turn of the event loop, no timed sleep; bounded).
        while (!writer.write(n % 3, n, p)) {
          if (Date.now() > deadline) throw new Error(`consumer stopped draining after ${n} packets`);
          await new Promise((r) => setImmediate(r));
        }
        expected.push({ trackId: n % 3, stamp: n, length: p.length, hash: fnv1a(p) });
      }
      const { seen } = await result;
      expect(seen).toEqual(expected);
      expect(writer.written).toBe(total);
    } finally {
      await worker.terminate();
    }
  });
});
