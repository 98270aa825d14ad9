/**
 * The fake homeserver's federation side for token-service tests: a TLS server on 127.0.0.1 with
 * a self-signed certificate (SANs 127.0.0.1, ::1 and localhost) serving
 * `GET /_matrix/federation/v1/openid/userinfo` with Synapse's answers (recorded in
 * fixtures/synapse-1.132/cs-api/openid-userinfo-*.json: 200 `{sub}`, 401 M_UNKNOWN_TOKEN
 * "Access Token unknown or expired", 401 M_MISSING_TOKEN "Access Token required") and,
 * when configured, `/.well-known/matrix/server` and `/.well-known/matrix/client`. Its server name
 * is `127.0.0.1:<port>` unless a test names it otherwise. Standalone, so the fake homeserver core
 * can compose it; every request is recorded (path, Host, SNI).
 */
import { createServer, type Server } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { randomBytes } from 'node:crypto';
import { generate } from 'selfsigned';

export interface FederationRequest {
  method: string;
  path: string;
  host: string | undefined;
  sni: string | undefined;
}

export interface FakeFederationServer {
  readonly port: number;
  /** `127.0.0.1:<port>` unless `serverName` was given. */
  readonly serverName: string;
  /** `https://127.0.0.1:<port>` */
  readonly url: string;
  /** PEM of the self-signed certificate, for clients that should trust it. */
  readonly certPem: string;
  readonly requests: FederationRequest[];
  /** Mints an OpenID access token for `userId` (like POST /user/{id}/openid/request_token). */
  issueOpenIdToken(userId: string): string;
  revokeOpenIdToken(token: string): void;
  /** Overrides the `sub` returned for a token (to test sub/server checks). */
  setUserInfoAnswer(token: string, answer: { status: number; body: unknown }): void;
  setWellKnownServer(delegation: string | undefined): void;
  setWellKnownClient(baseUrl: string | undefined): void;
  stop(): Promise<void>;
}

let cached: Promise<{ key: string; cert: string }> | undefined;

/** One certificate per test process (RSA generation is slow). */
export function testCertificate(): Promise<{ key: string; cert: string }> {
  cached ??= generate([{ name: 'commonName', value: 'localhost' }], {
    keySize: 2048,
    days: 2,
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints', cA: true },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, keyCertSign: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          { type: 2, value: 'localhost' },
          { type: 7, ip: '127.0.0.1' },
          { type: 7, ip: '::1' },
        ],
      },
    ],
  } as Parameters<typeof generate>[1]).then((r) => ({ key: r.private, cert: r.cert }));
  return cached;
}

function sendJson(res: import('node:http').ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Access-Control-Allow-Origin': '*' });
  res.end(JSON.stringify(body));
}

export async function startFakeFederationServer(opts: { serverName?: string; host?: string } = {}): Promise<FakeFederationServer> {
  const { key, cert } = await testCertificate();
  const tokens = new Map<string, string>();
  const answers = new Map<string, { status: number; body: unknown }>();
  const requests: FederationRequest[] = [];
  let wellKnownServer: string | undefined;
  let wellKnownClient: string | undefined;

  const server: Server = createServer({ key, cert }, (req, res) => {
    const url = new URL(req.url ?? '/', 'https://fake');
    requests.push({
      method: req.method ?? 'GET',
      path: url.pathname,
      host: req.headers.host,
      sni: (req.socket as TLSSocket).servername || undefined,
    });
    if (url.pathname === '/_matrix/federation/v1/openid/userinfo' && req.method === 'GET') {
      const token = url.searchParams.get('access_token');
      if (!token) return sendJson(res, 401, { errcode: 'M_MISSING_TOKEN', error: 'Access Token required' });
      const scripted = answers.get(token);
      if (scripted) return sendJson(res, scripted.status, scripted.body);
      const sub = tokens.get(token);
      if (!sub) return sendJson(res, 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Access Token unknown or expired' });
      return sendJson(res, 200, { sub });
    }
    if (url.pathname === '/.well-known/matrix/server' && wellKnownServer !== undefined) {
      return sendJson(res, 200, { 'm.server': wellKnownServer });
    }
    if (url.pathname === '/.well-known/matrix/client' && wellKnownClient !== undefined) {
      return sendJson(res, 200, { 'm.homeserver': { base_url: wellKnownClient } });
    }
    sendJson(res, 404, { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' });
  });
  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  const hostText = host.includes(':') ? `[${host}]` : host;
  return {
    port,
    serverName: opts.serverName ?? `${hostText}:${port}`,
    url: `https://${hostText}:${port}`,
    certPem: cert,
    requests,
    issueOpenIdToken(userId) {
      const token = randomBytes(18).toString('base64url');
      tokens.set(token, userId);
      return token;
    },
    revokeOpenIdToken(token) {
      tokens.delete(token);
    },
    setUserInfoAnswer(token, answer) {
      answers.set(token, answer);
    },
    setWellKnownServer(d) {
      wellKnownServer = d;
    },
    setWellKnownClient(u) {
      wellKnownClient = u;
    },
    async stop() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
