/**
 * Where the token service may connect for a client's OpenID token (bridge/token/address-policy.ts,
 * outbound-limits.ts): loopback and private addresses refused by default, also behind DNS names
 * and SRV delegation, with no connection made; numeric IPv4 disguises refused as invalid server
 * names; a stalling target answered within the connect bound; failures remembered briefly; and a
 * full look-up queue answered 503 M_LIMIT_EXCEEDED with Retry-After. Targets are plain TCP
 * listeners on 127.0.0.1 that count connections.
 */
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createManualClock } from '../../common/clock.ts';
import { resolveBridgeConfig } from '../../bridge/config.ts';
import { waitFor } from '../support/wait.ts';
import { startTokenHarness, type TokenHarness, type TokenHarnessOptions } from './token-harness.ts';

const ROOM = '!room:example.com';
const running: TokenHarness[] = [];
afterEach(async () => {
  for (const h of running.splice(0)) await h.stop();
});
async function start(opts: TokenHarnessOptions = {}): Promise<TokenHarness> {
  const h = await startTokenHarness({ fullAccess: 'trusted.example.com', membershipCheck: false, appservice: false, ...opts });
  running.push(h);
  return h;
}
function sfuGet(h: TokenHarness, serverName: string, userId: string) {
  const token = h.fed.issueOpenIdToken(userId);
  return h.post('/sfu/get', { room: ROOM, device_id: 'D', openid_token: { access_token: token, matrix_server_name: serverName } });
}

/** A TCP listener on 127.0.0.1 that counts connections and either drops them or holds them open. */
async function tcpTarget(mode: 'drop' | 'hold') {
  const sockets = new Set<Socket>();
  let connections = 0;
  const server = createNetServer((s) => {
    connections++;
    sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
    if (mode === 'drop') s.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    connections: () => connections,
    dropAll: () => sockets.forEach((s) => s.destroy()),
    stop: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

describe('where the token service may connect (federation_allow_private_addresses)', () => {
  const targets: { stop(): Promise<void> }[] = [];
  afterEach(async () => {
    for (const t of targets.splice(0)) await t.stop();
  });
  const refusing = () => start({ env: { BRIDGE_FEDERATION_ALLOW_PRIVATE_ADDRESSES: 'false' } });
  const openIdFor = (serverName: string) => ({
    room: ROOM,
    device_id: 'D',
    openid_token: { access_token: 'any-openid-token', matrix_server_name: serverName },
  });

  it('refuses by default: the resolved default config has it off', async () => {
    const config = resolveBridgeConfig({ LIVEKIT_URL: 'ws://x', LIVEKIT_KEY: 'k', LIVEKIT_SECRET: 'x'.repeat(32), LIVEKIT_FULL_ACCESS_HOMESERVERS: '*' });
    expect(config.federation_allow_private_addresses).toBe(false);
  });

  it('never connects to loopback, however the server name spells it, and answers 401', async () => {
    const target = await tcpTarget('drop');
    targets.push(target);
    const h = await refusing();
    const p = target.port;
    const names = [
      `127.0.0.1:${p}`, // the plain literal
      `localhost:${p}`, // a DNS name that resolves to loopback
      `[::1]:${p}`,
      `[::ffff:127.0.0.1]:${p}`, // IPv4-mapped
      `[::ffff:7f00:1]:${p}`,
      `127.1:${p}`, // numeric disguises: invalid server names
      `2130706433:${p}`,
      `0x7f000001:${p}`,
      `0177.0.0.1:${p}`,
      `127.0.0.1.:${p}`,
      `127.000.000.001:${p}`,
    ];
    for (const name of names) {
      const res = await h.post('/sfu/get', openIdFor(name));
      expect([name, res.status]).toEqual([name, 401]);
    }
    expect(target.connections()).toBe(0);
  });

  it('refuses a DNS name or delegation that leads to loopback (SRV to localhost)', async () => {
    const target = await tcpTarget('drop');
    targets.push(target);
    const h = await start({
      env: { BRIDGE_FEDERATION_ALLOW_PRIVATE_ADDRESSES: 'false' },
      deps: { federation: { wellKnownPort: target.port, resolveSrv: async () => [{ name: 'localhost', port: target.port, priority: 1, weight: 1 }] } },
    });
    const res = await h.post('/sfu/get', openIdFor('public-looking.example'));
    expect(res.status).toBe(401);
    expect(target.connections()).toBe(0);
  });

  it('connects to a loopback homeserver when explicitly allowed (as every other test here does)', async () => {
    const h = await start({ env: { BRIDGE_FEDERATION_ALLOW_PRIVATE_ADDRESSES: 'true' } });
    expect((await sfuGet(h, h.fed.serverName, `@alice:${h.fed.serverName}`)).status).toBe(200);
  });

  it('remembers a server that could not be reached for 30 s instead of connecting again', async () => {
    const target = await tcpTarget('drop');
    targets.push(target);
    const clock = createManualClock(Date.now());
    const h = await start({ clock });
    const name = `127.0.0.1:${target.port}`;
    expect((await h.post('/sfu/get', openIdFor(name))).status).toBe(401);
    expect(target.connections()).toBe(1);
    expect((await h.post('/sfu/get', openIdFor(name))).status).toBe(401);
    expect(target.connections()).toBe(1);
    clock.advance(30_001);
    expect((await h.post('/sfu/get', openIdFor(name))).status).toBe(401);
    expect(target.connections()).toBe(2);
  });

  it('answers within the 3 s connect bound when the target accepts and then stalls the TLS handshake', async () => {
    const target = await tcpTarget('hold');
    targets.push(target);
    const h = await start();
    const began = Date.now();
    const res = await h.post('/sfu/get', openIdFor(`127.0.0.1:${target.port}`));
    const took = Date.now() - began;
    expect(res.status).toBe(401);
    expect(target.connections()).toBe(1);
    expect(took).toBeGreaterThanOrEqual(2_900);
    expect(took).toBeLessThan(4_500);
  });

  it('answers 503 M_LIMIT_EXCEEDED with Retry-After when the look-up queue is full', async () => {
    const target = await tcpTarget('hold');
    targets.push(target);
    const h = await start({ env: { BRIDGE_FEDERATION_MAX_CONCURRENT_LOOKUPS: '1', BRIDGE_FEDERATION_MAX_QUEUED_LOOKUPS: '1' } });
    const name = `127.0.0.1:${target.port}`;
    const first = h.post('/sfu/get', openIdFor(name)); // stalls in the TLS handshake
    await waitFor('the first look-up connecting', () => target.connections() === 1);
    const second = h.post('/sfu/get', openIdFor(name)); // queued
    const third = await h.post('/sfu/get', openIdFor(name)); // refused at once
    expect(third.status).toBe(503);
    expect(third.headers.get('retry-after')).toBe('5');
    expect(third.json).toEqual({ errcode: 'M_LIMIT_EXCEEDED', error: 'Too many federation look-ups in progress; retry later', retry_after_ms: 5000 });
    target.dropAll();
    expect((await first).status).toBe(401);
    expect((await second).status).toBe(401); // failed moments ago: answered from the failure cache
    expect(target.connections()).toBe(1);
  });
});
