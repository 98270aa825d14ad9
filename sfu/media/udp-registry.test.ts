/**
 * werift's ICE sockets are tracked by port: one still bound on a port whose lease came back is
 * closed by `closeStrayUdp`, and one whose bind failed is closed instead of staying open.
 */
import { createSocket } from 'node:dgram';
import { describe, expect, it } from 'vitest';
import { UdpTransport } from 'werift';
import { createSilentLogger } from '../../common/logger.ts';
import { closeStrayUdp, installUdpRegistry, trackedUdpSockets } from './udp-registry.ts';

const openUdpHandles = () =>
  (process as unknown as { _getActiveHandles(): { setBroadcast?: unknown }[] })._getActiveHandles().filter((h) => typeof h.setBroadcast === 'function').length;

describe('udp registry', () => {
  it('closes a werift socket left bound on a returned port, and one whose bind failed', async () => {
    expect(installUdpRegistry(createSilentLogger())).toBe(true);
    const before = openUdpHandles();
    const t = await UdpTransport.init('udp4', { portRange: [43200, 43200], interfaceAddresses: { udp4: '127.0.0.1' } });
    expect(t.socket.address().port).toBe(43200);
    expect(trackedUdpSockets()).toBe(1);
    expect(closeStrayUdp([43190, 43199])).toBe(0);
    expect(closeStrayUdp([43200, 43200])).toBe(1);
    await new Promise((r) => setTimeout(r, 10));
    expect(trackedUdpSockets()).toBe(0);
    expect(openUdpHandles()).toBe(before);

    // A port somebody else holds: werift's bind fails, and its socket must not stay open.
    const holder = createSocket('udp4');
    await new Promise<void>((r) => holder.bind(43201, '127.0.0.1', () => r()));
    await expect(UdpTransport.init('udp4', { portRange: [43201, 43201], interfaceAddresses: { udp4: '127.0.0.1' } })).rejects.toThrow();
    await new Promise((r) => setTimeout(r, 10));
    expect(openUdpHandles()).toBe(before + 1); // the holder only
    holder.close();
  });
});
