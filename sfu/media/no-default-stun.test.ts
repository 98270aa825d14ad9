/**
 * The SFU's ICE agents ask no STUN server nobody configured: gathering a werift peer
 * connection made by the transport's peer config looks up no host name and sends nothing to
 * werift's default STUN server; a configured STUN server is still used.
 */
import dns from 'node:dns';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Connection, RTCPeerConnection } from 'werift';
import { createSilentLogger } from '../../common/logger.ts';
import { installNoDefaultStun } from './no-default-stun.ts';
import { peerConfig } from './peer-config.ts';

afterEach(() => vi.restoreAllMocks());

async function gatherOnce(pc: RTCPeerConnection): Promise<void> {
  pc.addTransceiver('audio', { direction: 'recvonly' });
  await pc.setLocalDescription(await pc.createOffer());
}

describe('installNoDefaultStun', () => {
  it('leaves an agent without a configured STUN server with none, and keeps a configured one', async () => {
    const lookups = vi.spyOn(dns.promises, 'lookup');
    expect(new Connection(true, {}).stunServer).toEqual(['stun.l.google.com', 19302]);
    expect(installNoDefaultStun(createSilentLogger())).toBe(true);
    expect(installNoDefaultStun(createSilentLogger())).toBe(true);
    expect(new Connection(true, {}).stunServer).toBeUndefined();
    expect(new Connection(true, { stunServer: ['127.0.0.1', 3478] }).stunServer).toEqual(['127.0.0.1', 3478]);

    const pc = new RTCPeerConnection(peerConfig({ portRange: [43100, 43110], nodeIp: '127.0.0.1' }, 'subscriber'));
    await gatherOnce(pc);
    expect(pc.iceTransports.map((t) => t.connection.stunServer)).toEqual([undefined]);
    await pc.close();
    expect(lookups.mock.calls.map((c) => c[0])).not.toContain('stun.l.google.com');
  });
});
