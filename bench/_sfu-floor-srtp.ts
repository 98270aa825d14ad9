/**
 * SRTP AEAD_AES_128_GCM (RFC 7714) protect in a dozen lines of Node crypto, for the floor
 * benchmark (bench/_sfu-floor*.ts) and its traffic: rollover counter 0 (short runs).
 */
import { createCipheriv, type KeyObject } from 'node:crypto';

export const TAG = 16;

export function gcmIv(salt: Buffer, ssrc: number, roc: number, seq: number): Buffer {
  const out = Buffer.allocUnsafe(12);
  out.writeUInt16BE(0, 0);
  out.writeUInt32BE(ssrc, 2);
  out.writeUInt32BE(roc, 6);
  out.writeUInt16BE(seq, 10);
  for (let i = 0; i < 12; i++) out[i]! ^= salt[i]!;
  return out;
}

/** SRTP GCM protect of `header` (already serialized) + `payload`, one buffer (RFC 7714). */
export function gcmProtect(key: KeyObject, salt: Buffer, header: Buffer, payload: Buffer, ssrc: number, seq: number): Buffer {
  const cipher = createCipheriv('aes-128-gcm', key, gcmIv(salt, ssrc, 0, seq));
  cipher.setAAD(header);
  const enc = cipher.update(payload);
  cipher.final();
  const out = Buffer.allocUnsafe(header.length + enc.length + TAG);
  header.copy(out, 0);
  enc.copy(out, header.length);
  cipher.getAuthTag().copy(out, header.length + enc.length);
  return out;
}

