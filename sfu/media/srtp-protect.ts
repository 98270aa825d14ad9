/**
 * SRTP protection of one outgoing RTP packet written straight into its wire buffer, for the
 * forwarding path (fast-send.ts), with the session keys werift derived (its SRTP local context)
 * and werift's own rollover-counter state, so the bytes are exactly what werift's
 * `SrtpSession.encrypt` would produce (srtp-protect.test.ts checks both profiles against it):
 * - AEAD_AES_128_GCM (RFC 7714): one `createCipheriv` per packet (Node has no way to re-key a
 *   GCM context with a new IV), the header as AAD, ciphertext and tag written after it;
 * - AES_CM_128_HMAC_SHA1_80 (RFC 3711): the keystream from one long-lived AES-128-ECB context
 *   per session (the counter blocks are encrypted, no cipher object per packet), the 80-bit tag
 *   as HMAC-SHA1 from two one-shot hashes over precomputed inner/outer key pads.
 *
 * Lifecycle: `createProtector(context)` per werift local context (the caller keeps it while
 * werift keeps that context: a new DTLS handshake makes new ones); undefined for a context of a
 * shape it does not know.
 */
import { createCipheriv, hash, KeyObject, type Cipheriv } from 'node:crypto';

/** werift's ProtectionProfile ids (rtp/src/srtp/const.ts). */
export const PROFILE_AES128_CM_HMAC_SHA1_80 = 0x0001;
export const PROFILE_AEAD_AES_128_GCM = 0x0007;

/** What the protector reads of werift's SrtpContext (rtp/src/srtp/context/srtp.ts). */
export interface SrtpLocalContext {
  profile: number;
  cipher: {
    srtpSessionKey: Buffer | KeyObject;
    srtpSessionSalt: Buffer;
    srtpSessionAuthTag?: Buffer | KeyObject;
  };
  getSrtpSsrcState(ssrc: number): { rolloverCounter: number };
  updateRolloverCount(sequenceNumber: number, state: { rolloverCounter: number }): void;
}

export interface RtpProtector {
  /** Bytes the protection adds after the payload. */
  readonly tagLength: number;
  /**
   * Encrypts `payload` into `wire` after the `headerLength` header bytes already written there
   * and appends the tag; `wire` is exactly header + payload + tag long.
   */
  protect(wire: Buffer, headerLength: number, payload: Buffer, ssrc: number, seq: number): void;
}

const bytesOf = (k: Buffer | KeyObject): Buffer => (k instanceof KeyObject ? k.export() : k);

export function isSrtpLocalContext(c: unknown): c is SrtpLocalContext {
  const x = c as Partial<SrtpLocalContext> | undefined;
  return (
    typeof x === 'object' &&
    x !== null &&
    (x.profile === PROFILE_AEAD_AES_128_GCM || x.profile === PROFILE_AES128_CM_HMAC_SHA1_80) &&
    typeof x.getSrtpSsrcState === 'function' &&
    typeof x.updateRolloverCount === 'function' &&
    typeof x.cipher === 'object' &&
    x.cipher !== null &&
    (Buffer.isBuffer(x.cipher.srtpSessionKey) || x.cipher.srtpSessionKey instanceof KeyObject) &&
    Buffer.isBuffer(x.cipher.srtpSessionSalt) &&
    (x.profile === PROFILE_AEAD_AES_128_GCM ||
      Buffer.isBuffer(x.cipher.srtpSessionAuthTag) ||
      x.cipher.srtpSessionAuthTag instanceof KeyObject)
  );
}

function gcmProtector(ctx: SrtpLocalContext): RtpProtector {
  const key = ctx.cipher.srtpSessionKey;
  const salt = ctx.cipher.srtpSessionSalt;
  const iv = Buffer.alloc(12);
  return {
    tagLength: 16,
    protect(wire, headerLength, payload, ssrc, seq) {
      const state = ctx.getSrtpSsrcState(ssrc);
      ctx.updateRolloverCount(seq, state);
      // RFC 7714 §8.1: 00 00 || SSRC || ROC || SEQ, XOR the 12-byte salt.
      iv.writeUInt16BE(0, 0);
      iv.writeUInt32BE(ssrc >>> 0, 2);
      iv.writeUInt32BE(state.rolloverCounter >>> 0, 6);
      iv.writeUInt16BE(seq, 10);
      for (let i = 0; i < 12; i++) iv[i]! ^= salt[i]!;
      const cipher = createCipheriv('aes-128-gcm', key, iv);
      cipher.setAAD(wire.subarray(0, headerLength));
      const enc = cipher.update(payload);
      enc.copy(wire, headerLength);
      cipher.final();
      cipher.getAuthTag().copy(wire, headerLength + payload.length);
    },
  };
}

const SHA1_BLOCK = 64;

function ctrProtector(ctx: SrtpLocalContext): RtpProtector {
  const salt = ctx.cipher.srtpSessionSalt;
  const ecb: Cipheriv = createCipheriv('aes-128-ecb', ctx.cipher.srtpSessionKey, null);
  ecb.setAutoPadding(false);
  const authKey = bytesOf(ctx.cipher.srtpSessionAuthTag!);
  const ipad = Buffer.alloc(SHA1_BLOCK, 0x36);
  const opad = Buffer.alloc(SHA1_BLOCK + 20, 0x5c);
  for (let i = 0; i < authKey.length; i++) {
    ipad[i]! ^= authKey[i]!;
    opad[i]! ^= authKey[i]!;
  }
  let counters = Buffer.alloc(16 * 128);
  let inner = Buffer.alloc(SHA1_BLOCK + 1500);
  ipad.copy(inner, 0);
  return {
    tagLength: 10,
    protect(wire, headerLength, payload, ssrc, seq) {
      const state = ctx.getSrtpSsrcState(ssrc);
      ctx.updateRolloverCount(seq, state);
      const roc = state.rolloverCounter >>> 0;
      const blocks = (payload.length + 15) >> 4;
      if (blocks * 16 > counters.length) counters = Buffer.alloc(blocks * 16);
      // RFC 3711 §4.1.1: IV = (salt << 16) XOR (SSRC << 64) XOR (index << 16); block counter last.
      for (let b = 0; b < blocks; b++) {
        const o = b * 16;
        counters.writeUInt32BE(0, o);
        counters.writeUInt32BE(ssrc >>> 0, o + 4);
        counters.writeUInt32BE(roc, o + 8);
        counters.writeUInt16BE(seq, o + 12);
        counters.writeUInt16BE(b, o + 14);
        for (let i = 0; i < 14; i++) counters[o + i]! ^= salt[i]!;
      }
      const keystream = ecb.update(counters.subarray(0, blocks * 16));
      for (let i = 0; i < payload.length; i++) wire[headerLength + i] = payload[i]! ^ keystream[i]!;
      // HMAC-SHA1(authKey, header || encrypted payload || ROC), first 10 bytes.
      const authenticated = headerLength + payload.length;
      if (SHA1_BLOCK + authenticated + 4 > inner.length) {
        inner = Buffer.alloc(SHA1_BLOCK + authenticated + 4);
        ipad.copy(inner, 0);
      }
      wire.copy(inner, SHA1_BLOCK, 0, authenticated);
      inner.writeUInt32BE(roc, SHA1_BLOCK + authenticated);
      const innerDigest = hash('sha1', inner.subarray(0, SHA1_BLOCK + authenticated + 4), 'buffer');
      innerDigest.copy(opad, SHA1_BLOCK);
      hash('sha1', opad, 'buffer').copy(wire, authenticated, 0, 10);
    },
  };
}

/** A protector for a werift SRTP local context; undefined for a context of an unknown shape. */
export function createProtector(context: unknown): RtpProtector | undefined {
  if (!isSrtpLocalContext(context)) return undefined;
  return context.profile === PROFILE_AEAD_AES_128_GCM ? gcmProtector(context) : ctrProtector(context);
}
