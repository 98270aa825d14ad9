import { describe, expect, it } from 'vitest';
import { RtpHeader, RtpPacket } from 'werift';
import { wireBytesOf } from './worker-relays.ts';

const header = () =>
  new RtpHeader({
    sequenceNumber: 4242,
    timestamp: 90000,
    ssrc: 0xdeadbeef,
    payloadType: 96,
    marker: true,
    extension: true,
    extensions: [
      { id: 1, payload: Buffer.from([0x90]) },
      { id: 4, payload: Buffer.from([1, 2, 3]) },
    ],
  });

describe('wireBytesOf', () => {
  it('gives the parsed datagram itself, byte for byte what serialising would give', () => {
    const wire = new RtpPacket(header(), Buffer.alloc(300, 9)).serialize();
    // As werift receives it: the decrypted packet inside a larger buffer.
    const big = Buffer.alloc(wire.length + 64);
    wire.copy(big, 32);
    const parsed = RtpPacket.deSerialize(big.subarray(32, 32 + wire.length));
    const raw = wireBytesOf(parsed)!;
    expect(raw).toBeDefined();
    expect(Buffer.from(raw).equals(wire)).toBe(true);
    expect(Buffer.from(raw).equals(parsed.serialize())).toBe(true);
  });

  it('keeps the padding of a padded packet', () => {
    const h = header();
    h.padding = true;
    h.paddingSize = 4;
    const wire = new RtpPacket(h, Buffer.alloc(40, 1)).serialize();
    const parsed = RtpPacket.deSerialize(wire);
    expect(Buffer.from(wireBytesOf(parsed)!).equals(wire)).toBe(true);
  });

  it('refuses a packet built in memory or changed after parsing, so the caller serialises', () => {
    expect(wireBytesOf(new RtpPacket(header(), Buffer.alloc(100, 3)))).toBeUndefined();
    const parsed = RtpPacket.deSerialize(new RtpPacket(header(), Buffer.alloc(100, 3)).serialize());
    parsed.header.sequenceNumber = 7;
    expect(wireBytesOf(parsed)).toBeUndefined();
    const other = RtpPacket.deSerialize(new RtpPacket(header(), Buffer.alloc(100, 3)).serialize());
    other.header.ssrc = 1;
    expect(wireBytesOf(other)).toBeUndefined();
  });
});
