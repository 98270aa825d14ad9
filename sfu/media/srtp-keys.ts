/**
 * SRTP/SRTCP session keys as prepared `KeyObject`s instead of raw Buffers.
 *
 * werift (0.25.2) creates a new Node cipher for every packet, in both directions and both
 * profiles (AEAD_AES_128_GCM preferred, AES_CM_128_HMAC_SHA1_80), passing the session key as a
 * Buffer; Node then imports that Buffer into a fresh secret key for each packet, which was the
 * largest single cost in the fan-out profile (`getKeyObjectSlots`/`createCipherBase`, about a
 * third of the SFU's busy time). A `KeyObject` is imported once, and Node's `createCipheriv`,
 * `createDecipheriv` and `createHmac` take it as they take a Buffer: the bytes on the wire are
 * identical (sfu/media/srtp-keys.test.ts checks that against werift's own contexts), only the
 * per-packet key import goes (about 4× less time per SRTP packet on this machine, see
 * `npm run bench -- srtp`).
 *
 * Where werift keeps the keys is private to it, so this module checks what it finds and leaves
 * a context alone (logging why) when the shape is not the one it knows: a werift upgrade can
 * make SRTP slower again, never wrong.
 */
import { createSecretKey, type KeyObject } from 'node:crypto';
import type { RTCDtlsTransport, RTCPeerConnection } from 'werift';
import type { Logger } from '../../common/logger.ts';

/** The key fields of werift's CipherAesGcm / CipherAesCtr (the HMAC keys exist on CTR only). */
const KEY_FIELDS = ['srtpSessionKey', 'srtcpSessionKey', 'srtpSessionAuthTag', 'srtcpSessionAuthTag'] as const;

type CipherKeys = Partial<Record<(typeof KEY_FIELDS)[number], Buffer | KeyObject>>;

interface SessionContexts {
  localContext?: { cipher?: CipherKeys };
  remoteContext?: { cipher?: CipherKeys };
}

/** Replaces one cipher's Buffer keys by KeyObjects; false when the cipher is not one we know. */
export function prepareCipherKeys(cipher: CipherKeys | undefined): boolean {
  if (!cipher || !Buffer.isBuffer(cipher.srtpSessionKey) || !Buffer.isBuffer(cipher.srtcpSessionKey)) return false;
  for (const field of KEY_FIELDS) {
    const value = cipher[field];
    if (Buffer.isBuffer(value) && value.length > 0) cipher[field] = createSecretKey(value);
  }
  return true;
}

/** Prepares the keys of a DTLS transport's current SRTP and SRTCP sessions. */
function prepareTransport(dtls: RTCDtlsTransport, log: Logger): void {
  const sessions = [dtls.srtp, dtls.srtcp] as unknown as (SessionContexts | undefined)[];
  let prepared = 0;
  let unknown = 0;
  for (const session of sessions) {
    if (!session) continue;
    for (const context of [session.localContext, session.remoteContext]) {
      if (!context?.cipher) continue;
      if (KEY_FIELDS.some((field) => context.cipher?.[field] && !Buffer.isBuffer(context.cipher[field]))) continue;
      if (prepareCipherKeys(context.cipher)) prepared++;
      else unknown++;
    }
  }
  if (unknown > 0) log.warn({ unknown, prepared }, 'SRTP context of an unknown shape: its keys stay Buffers (slower)');
}

/** DTLS transport method werift calls when it (re)derives SRTP sessions after a handshake. */
interface SrtpUpdater {
  updateSrtpSession(): void;
}

/**
 * Makes every DTLS transport of `pc` use prepared keys, now and whenever werift derives new
 * SRTP sessions. Call after each local/remote description (transports appear then); cheap and
 * idempotent.
 */
export function useKeyObjectsForSrtp(pc: RTCPeerConnection, hooked: WeakSet<object>, log: Logger): void {
  for (const dtls of pc.dtlsTransports) {
    if (hooked.has(dtls)) continue;
    hooked.add(dtls);
    const updater = dtls as unknown as SrtpUpdater;
    if (typeof updater.updateSrtpSession !== 'function') {
      log.warn('werift DTLS transport without updateSrtpSession: SRTP keys stay Buffers (slower)');
      continue;
    }
    const original = updater.updateSrtpSession.bind(dtls);
    updater.updateSrtpSession = () => {
      original();
      prepareTransport(dtls, log);
    };
    if (dtls.srtp) prepareTransport(dtls, log);
  }
}
