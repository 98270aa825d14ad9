/**
 * How a werift peer connection's end is noticed and made final, through werift's public API.
 *
 * - `watchDtls`: werift lets a DTLS session close (an alert from the peer) or fail without the
 *   peer connection's state changing, so media silently stops; each DTLS transport's own state is
 *   watched instead and reported once.
 * - `closePeer`: werift's `RTCPeerConnection.close()` stops its ICE transports last, after SCTP;
 *   when an earlier step rejects or never settles (SCTP over a DTLS session that is gone) the UDP
 *   sockets stay open for good (and a process holding one never exits). The ICE transports are
 *   collected first and stopped once `close()` has settled or `CLOSE_GRACE_MS` has passed,
 *   whichever comes first; stopping twice is harmless.
 */
import type { RTCPeerConnection, RTCIceTransport } from 'werift';
import type { Logger } from '../../common/logger.ts';
import type { Clock, TimerHandle } from '../../common/clock.ts';

/** How long werift's close() may take (SCTP ABORT, DTLS) before its sockets are closed anyway. */
export const CLOSE_GRACE_MS = 2000;

/**
 * Calls `onEnded` (at most once per DTLS transport) when one of `pc`'s DTLS transports closes
 * or fails. Call after each local description (transports appear then); idempotent.
 */
export function watchDtls(pc: RTCPeerConnection, watched: WeakSet<object>, onEnded: (state: 'closed' | 'failed') => void): void {
  for (const dtls of pc.dtlsTransports) {
    if (watched.has(dtls)) continue;
    watched.add(dtls);
    let reported = false;
    dtls.onStateChange.subscribe((state) => {
      if (reported || (state !== 'closed' && state !== 'failed')) return;
      reported = true;
      onEnded(state);
    });
  }
}

/** Closes `pc` and, whatever its close did, each of its ICE transports (their UDP sockets). */
export async function closePeer(pc: RTCPeerConnection, log: Logger, clock: Clock): Promise<void> {
  const ices = new Set<RTCIceTransport>(pc.iceTransports);
  for (const dtls of pc.dtlsTransports) ices.add(dtls.iceTransport);
  let timer: TimerHandle | undefined;
  const grace = new Promise<void>((resolve) => {
    timer = clock.setTimeout(() => {
      log.debug('peer connection close still pending; closing its sockets');
      resolve();
    }, CLOSE_GRACE_MS);
  });
  const closed = pc.close().catch((err: unknown) => {
    log.debug({ err }, 'peer connection close failed; stopping its ICE transports directly');
  });
  await Promise.race([closed, grace]);
  clock.clearTimeout(timer);
  await Promise.allSettled(
    Array.from(ices, async (ice) => {
      if (ice.state !== 'closed') await ice.stop();
      // werift's stop() skips a transport already marked closed; close its sockets regardless.
      await ice.connection.close();
    }),
  );
}
