/**
 * werift gives every ICE agent a STUN server when none is configured (`stun.l.google.com:19302`,
 * its `DEFAULT_STUN_SERVER`), so each peer connection of the SFU looked up that name and sent a
 * binding request to Google to learn a server-reflexive address it never uses (the SFU
 * advertises `rtc.node_ip`; STUN discovery is not supported). That is traffic to a third party
 * for every participant, and on a host without outside DNS each look-up occupies one of libuv's
 * four threads until it times out, holding the participant's transport (and everything else
 * that needs the thread pool) meanwhile. `installNoDefaultStun` makes an ICE agent without a
 * configured STUN server have none, as the WebRTC API does. Idempotent; patches werift's
 * exported `Connection` class once per process and says so when werift's shape has changed.
 */
import { Connection } from 'werift';
import type { Logger } from '../../common/logger.ts';

interface ConnectionShape {
  options: { stunServer?: unknown };
  stunServer?: unknown;
  applyStunTurnServersFromOptions?: (this: ConnectionShape) => void;
}

let installed: boolean | undefined;

/** Returns whether werift's ICE agents now go without a default STUN server. */
export function installNoDefaultStun(logger: Logger): boolean {
  if (installed !== undefined) return installed;
  const proto = Connection.prototype as unknown as ConnectionShape;
  const original = proto.applyStunTurnServersFromOptions;
  if (typeof original !== 'function') {
    logger.error(
      'werift is not the shape expected (Connection.applyStunTurnServersFromOptions): its ICE agents will ask its default STUN server (stun.l.google.com) for every peer connection',
    );
    return (installed = false);
  }
  proto.applyStunTurnServersFromOptions = function applyWithoutDefaultStun(this: ConnectionShape) {
    original.call(this);
    if (this.options.stunServer === undefined || this.options.stunServer === null) this.stunServer = undefined;
  };
  return (installed = true);
}
