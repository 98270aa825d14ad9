/**
 * The per-connection signal message rate (our signal_limits.messages_per_second and
 * message_burst): a token bucket on the injected clock. `take()` answers whether one more
 * message is allowed now. One per WebSocket, dropped with it.
 */
import type { Clock } from '../../common/clock.ts';

export interface MessageRate {
  take(): boolean;
}

export function createMessageRate(
  clock: Clock,
  limits: { messages_per_second: number; message_burst: number },
): MessageRate {
  let tokens = limits.message_burst;
  let at = clock.now();
  return {
    take() {
      const now = clock.now();
      if (now > at) {
        tokens = Math.min(limits.message_burst, tokens + ((now - at) * limits.messages_per_second) / 1000);
        at = now;
      }
      if (tokens < 1) return false;
      tokens -= 1;
      return true;
    },
  };
}
