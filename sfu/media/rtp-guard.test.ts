/**
 * The RTP header bound: well-formed headers of every shape pass (and parse in werift as
 * before), headers whose CSRC list or extension block runs past the datagram or that carry
 * too many extension elements are refused before werift's parser walks them.
 */
import { describe, expect, it } from 'vitest';
import { RtpHeader, RtpPacket } from 'werift';
import { installRtpHeaderGuard, MalformedRtpError, wellFormedRtpHeader } from './rtp-guard.ts';

function packet(extensions: { id: number; payload: Buffer }[], csrc: number[] = []): Buffer {
  return new RtpPacket(
    new RtpHeader({ sequenceNumber: 7, timestamp: 90, ssrc: 0x1234, payloadType: 96, csrc, csrcLength: csrc.length, extensions, extension: extensions.length > 0 }),
    Buffer.from([1, 2, 3]),
  ).serialize();
}

/** An RTP header with the X bit whose extension block claims `words` 32-bit words. */
function claimedExtension(words: number, profile = 0xbede, body: number[] = []): Buffer {
  const b = Buffer.alloc(16 + body.length);
  b[0] = 0x90;
  b[1] = 96;
  b.writeUInt16BE(profile, 12);
  b.writeUInt16BE(words, 14);
  Buffer.from(body).copy(b, 16);
  return b;
}

describe('wellFormedRtpHeader', () => {
  it.each([
    ['no extension', packet([])],
    ['one-byte extensions', packet([{ id: 1, payload: Buffer.from([0x85]) }, { id: 3, payload: Buffer.from([1, 2, 3]) }])],
    ['two-byte extension (payload > 16 bytes)', packet([{ id: 1, payload: Buffer.alloc(20, 7) }])],
    ['CSRCs', packet([], [1, 2, 3])],
    ['extension block of padding only', claimedExtension(1, 0xbede, [0, 0, 0, 0])],
    ['unknown profile with an in-bounds block', claimedExtension(1, 0x1234, [9, 9, 9, 9])],
  ])('accepts %s', (_name, buf) => {
    expect(wellFormedRtpHeader(buf)).toBe(true);
  });

  it.each([
    ['shorter than the fixed header', Buffer.alloc(11, 0x80)],
    ['version 1', Buffer.from([0x40, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1])],
    ['CSRC count past the end', Buffer.from([0x8f, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 5])],
    ['X bit without room for the extension header', Buffer.from([0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xbe])],
    ['extension length 0xffff words in a 40-byte datagram', Buffer.concat([claimedExtension(0xffff), Buffer.alloc(24)])],
    ['extension length one word past the end', claimedExtension(2, 0xbede, [0x10, 1, 0, 0])],
    ['one-byte element running past its block', claimedExtension(1, 0xbede, [0x1f, 1, 2, 3])],
    ['two-byte element running past its block', claimedExtension(1, 0x1000, [1, 9, 0, 0])],
    ['more elements than any sender uses', claimedExtension(20, 0xbede, Array.from({ length: 80 }, (_, i) => (i % 2 ? 0 : 0x10)))],
  ])('refuses %s', (_name, buf) => {
    expect(wellFormedRtpHeader(buf)).toBe(false);
  });
});

describe('the werift transport factory', () => {
  it('installs the guard before any transport exists', async () => {
    const { createWeriftTransportFactory } = await import('./transport.ts');
    const { createSilentLogger } = await import('../../common/logger.ts');
    const { systemClock } = await import('../../common/clock.ts');
    createWeriftTransportFactory({ config: { portRange: [43000, 43010], nodeIp: '127.0.0.1' }, logger: createSilentLogger(), clock: systemClock });
    expect(() => RtpHeader.deSerialize(claimedExtension(0x4000))).toThrow(MalformedRtpError);
  });
});

describe('installRtpHeaderGuard', () => {
  it('makes werift refuse the hostile header at once and still parse good packets', () => {
    installRtpHeaderGuard();
    installRtpHeaderGuard();
    expect(() => RtpHeader.deSerialize(Buffer.concat([claimedExtension(0xffff), Buffer.alloc(24)]))).toThrow(MalformedRtpError);
    expect(() => RtpPacket.deSerialize(claimedExtension(0x4000))).toThrow(MalformedRtpError);
    const good = RtpPacket.deSerialize(packet([{ id: 1, payload: Buffer.from([0x85]) }]));
    expect(good.header.extensions).toEqual([{ id: 1, payload: Buffer.from([0x85]) }]);
    expect(good.payload).toEqual(Buffer.from([1, 2, 3]));
  });
});
