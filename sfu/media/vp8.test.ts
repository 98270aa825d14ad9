/**
 * VP8 payload descriptor parsing and picture-id munging, on descriptors captured from Chromium
 * 156 publishing 720p simulcast through our SFU (first 12 payload bytes, via PacketTap), plus
 * hand-made edge cases (7-bit picture id, no extension byte, truncated payloads).
 */
import { describe, expect, it } from 'vitest';
import { Vp8Munger, newVp8Descriptor, parseVp8Descriptor } from './vp8.ts';

/** Captured from Chromium 156 (hex of the first 12 bytes of the RTP payload). */
const CHROME = {
  /** X I L T, S=1: keyframe start (VP8 header P=0, start code 9d 01 2a). */
  keyframe: '90e094dd3c20904d009d012a',
  /** Same picture, later packet (S=0). */
  continuation: '80e094dd3c202a2c26540b59',
  /** Delta frame start, TID 0, Y 0. */
  delta: '90e094eb4000f13300e4718f',
  /** Non-reference (N) delta start on temporal layer 2, Y 1. */
  nonReferenceTid2: 'b0e0ac35e5a0910800251c24',
  /** Non-reference continuation packet. */
  nonReferenceContinuation: 'a0e094ef41a0849eaf675793',
};

const hex = (s: string) => Buffer.from(s, 'hex');

describe('parseVp8Descriptor', () => {
  it.each([
    ['Chrome keyframe start', CHROME.keyframe, { valid: true, frameStart: true, keyframe: true, pictureIdBits: 15, pictureId: 0x14dd, tl0PicIdx: 0x3c, keyIdx: 0, size: 6 }],
    ['Chrome continuation', CHROME.continuation, { valid: true, frameStart: false, keyframe: false, pictureId: 0x14dd, tl0PicIdx: 0x3c, size: 6 }],
    ['Chrome delta start', CHROME.delta, { valid: true, frameStart: true, keyframe: false, pictureId: 0x14eb, tl0PicIdx: 0x40, size: 6 }],
    ['Chrome non-reference TID 2', CHROME.nonReferenceTid2, { frameStart: true, keyframe: false, pictureId: 0x2c35, tl0PicIdx: 0xe5 }],
    ['Chrome non-reference continuation', CHROME.nonReferenceContinuation, { frameStart: false, pictureId: 0x14ef, tl0PicIdx: 0x41 }],
    ['no X byte, keyframe', '1000', { valid: true, keyframe: true, pictureIdAt: -1, tl0At: -1, tkAt: -1, size: 1 }],
    ['7-bit picture id', '90801200', { valid: true, pictureIdBits: 7, pictureId: 0x12, keyframe: true, size: 3 }],
    ['K only (KEYIDX 5)', '90100500', { valid: true, hasKeyIdx: true, keyIdx: 5, tkAt: 2, size: 3 }],
    ['truncated picture id', '9080', { valid: false }],
    ['truncated 15-bit picture id', '908081', { valid: false }],
    ['empty', '', { valid: false }],
  ])('%s', (_name, bytes, expected) => {
    const d = newVp8Descriptor();
    parseVp8Descriptor(hex(bytes), d);
    expect(d).toMatchObject(expected);
  });

  it('reuses the descriptor object: a shorter packet clears fields of the previous one', () => {
    const d = newVp8Descriptor();
    parseVp8Descriptor(hex(CHROME.keyframe), d);
    parseVp8Descriptor(hex('1001'), d);
    expect(d).toMatchObject({ pictureIdAt: -1, tl0At: -1, keyframe: false, size: 1 });
  });
});

describe('Vp8Munger', () => {
  it('passes payloads through untouched (same buffer) until the first layer switch', () => {
    const m = new Vp8Munger();
    const d = newVp8Descriptor();
    const key = hex(CHROME.keyframe);
    parseVp8Descriptor(key, d);
    m.switchTo(d);
    expect(m.rewrite(key, d)).toBe(key);
    const cont = hex(CHROME.continuation);
    parseVp8Descriptor(cont, d);
    expect(m.rewrite(cont, d)).toBe(cont);
  });

  it('continues picture id and TL0PICIDX across a switch to another layer and changes nothing else', () => {
    const m = new Vp8Munger();
    const d = newVp8Descriptor();
    // Layer q: keyframe then a delta (picture 0x14eb, TL0 0x40).
    for (const p of [CHROME.keyframe, CHROME.delta]) {
      const b = hex(p);
      parseVp8Descriptor(b, d);
      if (p === CHROME.keyframe) m.switchTo(d);
      m.rewrite(b, d);
    }
    // Switch to layer h at its keyframe, numbered 0x2c34 / TL0 0xe5 by the publisher.
    const hKey = hex('90e0ac34e520f01c009d012a');
    parseVp8Descriptor(hKey, d);
    m.switchTo(d);
    const out = m.rewrite(hKey, d);
    expect(out).not.toBe(hKey);
    const o = newVp8Descriptor();
    parseVp8Descriptor(out, o);
    expect(o.pictureId).toBe(0x14ec);
    expect(o.tl0PicIdx).toBe(0x41);
    expect(o.keyframe).toBe(true);
    expect(out.subarray(o.size).equals(hKey.subarray(d.size))).toBe(true);
    expect(hKey.toString('hex')).toBe('90e0ac34e520f01c009d012a'); // the shared original is intact
    // The next picture of layer h follows on.
    const hNext = hex(CHROME.nonReferenceTid2);
    parseVp8Descriptor(hNext, d);
    parseVp8Descriptor(m.rewrite(hNext, d), o);
    expect(o.pictureId).toBe(0x14ed);
    expect(o.tl0PicIdx).toBe(0x41);
    // The TID/Y bits next to KEYIDX survive.
    expect(m.rewrite(hNext, d)[5]).toBe(0xa0);
  });

  it('wraps the 15-bit picture id and 8-bit TL0PICIDX', () => {
    const m = new Vp8Munger();
    const d = newVp8Descriptor();
    const last = hex('90e0fffffe2000');
    parseVp8Descriptor(last, d);
    m.switchTo(d);
    m.rewrite(last, d);
    const other = hex('90e080100520' + '00'.repeat(1));
    parseVp8Descriptor(other, d);
    m.switchTo(d);
    const o = newVp8Descriptor();
    parseVp8Descriptor(m.rewrite(other, d), o);
    expect(o.pictureId).toBe(0);
    expect(o.tl0PicIdx).toBe(0xff);
  });

  it('rebuilds an old packet with the offsets of its own stretch (retransmission) without moving the counters', () => {
    const m = new Vp8Munger();
    const d = newVp8Descriptor();
    const b = hex(CHROME.delta);
    parseVp8Descriptor(b, d);
    const out = m.rewrite(b, d, { pictureId: 3, tl0PicIdx: 1, keyIdx: 0 }, false);
    const o = newVp8Descriptor();
    parseVp8Descriptor(out, o);
    expect(o.pictureId).toBe(0x14ee);
    expect(o.tl0PicIdx).toBe(0x41);
    // Counters untouched: the first real packet still passes through as is.
    parseVp8Descriptor(hex(CHROME.keyframe), d);
    m.switchTo(d);
    expect(m.offsets).toEqual({ pictureId: 0, tl0PicIdx: 0, keyIdx: 0 });
  });
});
