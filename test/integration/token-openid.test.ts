/**
 * OpenID verification over federation TLS: certificate checks and the one exact value that skips
 * them, server-name resolution (IP literal with port, .well-known delegation, SRV) with the
 * right Host and SNI, and cached resolution; and where it may connect at all: loopback and
 * private addresses refused by default (also behind DNS names and delegation), numeric IPv4
 * disguises refused as invalid server names, failures remembered briefly, and a full look-up
 * queue answered 503 with Retry-After.
 */
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createManualClock } from '../../common/clock.ts';
import { resolveBridgeConfig } from '../../bridge/config.ts';
import { waitFor } from '../support/wait.ts';
import { startFakeFederationServer, type FakeFederationServer } from '../fake-homeserver/federation.ts';
import { startTokenHarness, type TokenHarness, type TokenHarnessOptions } from './token-harness.ts';

const ROOM = '!room:example.com';
const running: TokenHarness[] = [];
const feds: FakeFederationServer[] = [];
afterEach(async () => {
  for (const h of running.splice(0)) await h.stop();
  for (const f of feds.splice(0)) await f.stop();
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

describe('LIVEKIT_INSECURE_SKIP_VERIFY_TLS', () => {
  it('accepts a self-signed homeserver certificate with YES_I_KNOW_WHAT_I_AM_DOING (enabled_accepts_self_signed_tls)', async () => {
    const h = await start({ trustCa: false, env: { LIVEKIT_INSECURE_SKIP_VERIFY_TLS: 'YES_I_KNOW_WHAT_I_AM_DOING' } });
    const res = await sfuGet(h, h.fed.serverName, `@alice:${h.fed.serverName}`);
    expect(res.status).toBe(200);
  });

  it('rejects a self-signed certificate when unset (unset_rejects_self_signed_tls)', async () => {
    const h = await start({ trustCa: false });
    const res = await sfuGet(h, h.fed.serverName, `@alice:${h.fed.serverName}`);
    expect(res.status).toBe(401);
    expect(h.fed.requests.filter((r) => r.path.includes('userinfo'))).toEqual([]);
  });

  it.each(['true', 'yes_i_know_what_i_am_doing', 'YES_I_KNOW_WHAT_I_AM_DOING!'])(
    'rejects a self-signed certificate with the wrong value %s (wrong_value_rejects_self_signed_tls)',
    async (value) => {
      const h = await start({ trustCa: false, env: { LIVEKIT_INSECURE_SKIP_VERIFY_TLS: value } });
      expect((await sfuGet(h, h.fed.serverName, `@alice:${h.fed.serverName}`)).status).toBe(401);
    },
  );
});

describe('server-name resolution', () => {
  it('connects to an IP literal with an explicit port, Host = server name, no SNI', async () => {
    const h = await start();
    expect((await sfuGet(h, h.fed.serverName, `@alice:${h.fed.serverName}`)).status).toBe(200);
    const req = h.fed.requests.find((r) => r.path.endsWith('/userinfo'))!;
    expect(req.host).toBe(h.fed.serverName);
    expect(req.sni).toBeUndefined();
  });

  it('follows .well-known/matrix/server delegation with SNI = delegated host, and caches it', async () => {
    // `localhost` has no port: its well-known is fetched (here on wellKnownHost's port) and delegates.
    const wellKnownHost = await startFakeFederationServer();
    const delegatedTo = await startFakeFederationServer();
    feds.push(wellKnownHost, delegatedTo);
    wellKnownHost.setWellKnownServer(`localhost:${delegatedTo.port}`);
    const h = await start({ deps: { federation: { tlsCa: [wellKnownHost.certPem], wellKnownPort: wellKnownHost.port } } });
    const body = () => ({
      room: ROOM,
      device_id: 'D',
      openid_token: { access_token: delegatedTo.issueOpenIdToken('@alice:localhost'), matrix_server_name: 'localhost' },
    });
    expect((await h.post('/sfu/get', body())).status).toBe(200);
    const info = delegatedTo.requests.find((r) => r.path.endsWith('/userinfo'))!;
    expect(info.sni).toBe('localhost');
    expect(info.host).toBe(`localhost:${delegatedTo.port}`);
    const wk = () => wellKnownHost.requests.filter((r) => r.path === '/.well-known/matrix/server');
    expect(wk()).toHaveLength(1);
    expect(wk()[0]!.sni).toBe('localhost');
    expect((await h.post('/sfu/get', body())).status).toBe(200);
    expect(wk()).toHaveLength(1);
  });

  it('uses the _matrix._tcp SRV record when there is no .well-known, with SNI = server name', async () => {
    const target = await startFakeFederationServer();
    feds.push(target);
    const asked: string[] = [];
    const h = await start({
      deps: {
        federation: {
          tlsCa: [target.certPem],
          wellKnownPort: target.port,
          resolveSrv: async (name: string) => {
            asked.push(name);
            return [{ name: 'localhost', port: target.port, priority: 10, weight: 5 }];
          },
        },
      },
    });
    const token = target.issueOpenIdToken('@alice:localhost');
    const res = await h.post('/sfu/get', { room: ROOM, device_id: 'D', openid_token: { access_token: token, matrix_server_name: 'localhost' } });
    expect(res.status).toBe(200);
    expect(asked).toEqual(['_matrix._tcp.localhost']);
    const info = target.requests.find((r) => r.path.endsWith('/userinfo'))!;
    expect(info.host).toBe('localhost');
    expect(info.sni).toBe('localhost');
  });
});

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
