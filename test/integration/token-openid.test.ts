/**
 * OpenID verification over federation TLS: certificate checks and the one exact value that skips
 * them, server-name resolution (IP literal with port, .well-known delegation, SRV) with the
 * right Host and SNI, and cached resolution.
 */
import { afterEach, describe, expect, it } from 'vitest';
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
