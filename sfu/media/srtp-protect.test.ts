/**
 * The forwarding path's SRTP protection against werift's own, byte for byte: the same master
 * keys, the same packets (sequence numbers across a rollover, several payload sizes, header
 * extensions), both profiles; and one captured packet per profile pinned as hex so a change
 * in either implementation shows.
 */
import { describe, expect, it } from 'vitest';
import { ProtectionProfileAeadAes128Gcm, ProtectionProfileAes128CmHmacSha1_80, RtpHeader, SrtpSession } from 'werift';
import { createProtector } from './srtp-protect.ts';
import { prepareCipherKeys } from './srtp-keys.ts';
import { writeRtpHeader } from './fast-send.ts';

const MASTER_KEY = Buffer.from('e1f97a0d3e018be0d64fa32c06de4139', 'hex');
const MASTER_SALT_CM = Buffer.from('0ec675ad498afeebb6960b3aabe6', 'hex');
const MASTER_SALT_GCM = Buffer.from('0ec675ad498afeebb6960b3a', 'hex');

function session(profile: number, prepared: boolean): SrtpSession {
  const salt = profile === ProtectionProfileAeadAes128Gcm ? MASTER_SALT_GCM : MASTER_SALT_CM;
  const s = new SrtpSession({
    keys: { localMasterKey: MASTER_KEY, localMasterSalt: salt, remoteMasterKey: MASTER_KEY, remoteMasterSalt: salt },
    profile: profile as typeof ProtectionProfileAeadAes128Gcm,
  });
  if (prepared) prepareCipherKeys((s as unknown as { localContext: { cipher: Parameters<typeof prepareCipherKeys>[0] } }).localContext.cipher);
  return s;
}

function ours(s: SrtpSession, header: RtpHeader, payload: Buffer): Buffer {
  const ctx = (s as unknown as { localContext: unknown }).localContext;
  const p = createProtector(ctx);
  if (!p) throw new Error('context not recognised');
  const h = header.serialize(header.serializeSize);
  const wire = Buffer.alloc(h.length + payload.length + p.tagLength);
  h.copy(wire);
  p.protect(wire, h.length, payload, header.ssrc, header.sequenceNumber);
  return wire;
}

const header = (seq: number, exts: { id: number; payload: Buffer }[] = []) =>
  new RtpHeader({ payloadType: 111, sequenceNumber: seq, timestamp: (seq * 960) >>> 0, ssrc: 0x5eed1234, marker: seq % 7 === 0, extensions: exts, extension: exts.length > 0 });

describe.each([
  ['AEAD_AES_128_GCM', ProtectionProfileAeadAes128Gcm],
  ['AES_CM_128_HMAC_SHA1_80', ProtectionProfileAes128CmHmacSha1_80],
])('SRTP protect, %s', (_name, profile) => {
  it.each([false, true])('equals werift for a run of packets across a sequence-number rollover (KeyObject keys: %s)', (prepared) => {
    const werift = session(profile, prepared);
    const mine = session(profile, prepared);
    for (let i = 0; i < 40; i++) {
      const seq = (65520 + i) & 0xffff;
      const payload = Buffer.alloc(1 + ((i * 53) % 1200), i);
      const exts = i % 3 === 0 ? [{ id: 1, payload: Buffer.from('0') }, { id: 3, payload: Buffer.from([1, 2, 3]) }] : [];
      const expected = werift.encrypt(payload, header(seq, exts));
      expect(ours(mine, header(seq, exts), payload).toString('hex')).toBe(expected.toString('hex'));
    }
  });

  it('what it protects, werift unprotects', () => {
    const payload = Buffer.from('an opus frame, more or less');
    const wire = ours(session(profile, true), header(4242), payload);
    const plain = session(profile, false).decrypt(wire);
    expect(plain.subarray(plain.length - payload.length).equals(payload)).toBe(true);
  });
});

describe('SRTP protect, captured packets', () => {
  // Captured from werift 0.25.2's SrtpSession.encrypt for the keys above, seq 1000, ts 960000.
  it.each([
    ['AEAD_AES_128_GCM', ProtectionProfileAeadAes128Gcm, '806f03e8000ea6005eed1234fd0a23ea29b205294515c8bb6024e8837c8cb2f4d495b333cdafe7a6e968'],
    ['AES_CM_128_HMAC_SHA1_80', ProtectionProfileAes128CmHmacSha1_80, '806f03e8000ea6005eed1234b67619b2b3ff0b316bd86bbbcccca135b586298dd879c972'],
  ])('%s', (_name, profile, captured) => {
    const h = new RtpHeader({ payloadType: 111, sequenceNumber: 1000, timestamp: 960000, ssrc: 0x5eed1234, marker: false });
    expect(ours(session(profile, true), h, Buffer.from('pinned payload')).toString('hex')).toBe(captured);
  });
});

describe('createProtector', () => {
  it('refuses a context it does not know', () => {
    expect(createProtector(undefined)).toBeUndefined();
    expect(createProtector({ profile: 7, cipher: {} })).toBeUndefined();
  });
});

describe('writeRtpHeader (the forwarding path) against werift’s RtpHeader.serialize', () => {
  it.each([
    ['no extensions', 0xbede, [] as { id: number; payload: Buffer }[], [] as number[]],
    ['one-byte mid + abs-send-time + audio level', 0xbede, [{ id: 1, payload: Buffer.from('0') }, { id: 3, payload: Buffer.from([1, 2, 3]) }, { id: 10, payload: Buffer.from([0x85]) }], []],
    ['two-byte profile, with CSRCs', 0x1000, [{ id: 2, payload: Buffer.from('mid-7') }, { id: 20, payload: Buffer.alloc(0) }], [0x11111111, 0x22222222]],
  ])('%s', (_name, profile, exts, csrc) => {
    const h = new RtpHeader({ payloadType: 96, sequenceNumber: 77, timestamp: 0xfffffff0, ssrc: 0xabcdef01, marker: true, csrc, extensionProfile: profile as 0xbede, extensions: exts, extension: exts.length > 0 });
    const expected = h.serialize(h.serializeSize);
    const wire = Buffer.alloc(expected.length);
    const n = writeRtpHeader(wire, h, h.ssrc, h.payloadType, profile, exts, exts.length);
    expect(n).toBe(expected.length);
    expect(wire.toString('hex')).toBe(expected.toString('hex'));
  });
});
