/**
 * OpenID verification against the user's homeserver over federation
 * (`GET /_matrix/federation/v1/openid/userinfo`), with server-name resolution as the federation
 * spec and gomatrixserverlib do it: IP literal (port 8448 unless given), explicit port as is,
 * else `/.well-known/matrix/server` delegation, SRV `_matrix._tcp`, then port 8448. Requests go
 * over HTTPS with the server name as SNI and Host, bounded by a 5 s connect and a 30 s total
 * timeout. Certificate checks are skipped only when the config said exactly
 * `LIVEKIT_INSECURE_SKIP_VERIFY_TLS=YES_I_KNOW_WHAT_I_AM_DOING` (resolved into a boolean by
 * bridge/config.ts). Resolutions are cached per server name on the injected clock.
 * Network timeouts run on real time (they bound real sockets), cache expiry on the clock.
 */
import { Agent, request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import type { SrvRecord } from 'node:dns';
import { Resolver } from 'node:dns/promises';
import type { Clock } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';

export interface ResolvedServer {
  /** Address or hostname to connect to. */
  host: string;
  port: number;
  /** TLS server name (SNI and certificate check); undefined for IP literals. */
  sni: string | undefined;
  /** `Host` header. */
  hostHeader: string;
}

export interface HttpsJsonResult {
  status: number;
  json: unknown;
}

export interface FederationClientDeps {
  clock: Clock;
  logger: Logger;
  insecureSkipVerifyTls: boolean;
  /** Extra trusted CA certificates (PEM), e.g. a test CA; added to Node's defaults. */
  tlsCa?: string[];
  /** SRV lookup; defaults to node:dns. */
  resolveSrv?: (name: string) => Promise<SrvRecord[]>;
  /** Port of `.well-known` fetches (443; tests bind elsewhere). */
  wellKnownPort?: number;
  /** Per-request connect timeout (5 s). */
  connectTimeoutMs?: number;
  /** Per-request total timeout (30 s). */
  requestTimeoutMs?: number;
  /** How long a resolution is reused (1 h). */
  resolutionCacheMs?: number;
}

export class OpenIdVerificationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OpenIdVerificationError';
  }
}

export interface FederationClient {
  /** Closes idle keep-alive connections. */
  close(): void;
  resolveServerName(serverName: string): Promise<ResolvedServer>;
  /** Returns the verified Matrix user id; throws OpenIdVerificationError. */
  verifyOpenIdToken(accessToken: string, matrixServerName: string): Promise<string>;
  /** HTTPS GET returning parsed JSON (undefined when not JSON); used for well-known lookups too. */
  getJson(target: ResolvedServer, path: string): Promise<HttpsJsonResult>;
}

const MAX_RESPONSE_BYTES = 64 * 1024;

/** Splits `host[:port]` / `[v6]:port`; undefined when malformed. */
export function splitHostPort(name: string): { host: string; port: number | undefined } | undefined {
  if (!name) return undefined;
  let host: string;
  let portText: string | undefined;
  if (name.startsWith('[')) {
    const end = name.indexOf(']');
    if (end < 0) return undefined;
    host = name.slice(1, end);
    const rest = name.slice(end + 1);
    if (rest && !rest.startsWith(':')) return undefined;
    portText = rest ? rest.slice(1) : undefined;
    if (isIP(host) !== 6) return undefined;
  } else {
    const i = name.lastIndexOf(':');
    if (i >= 0 && name.indexOf(':') !== i) return undefined; // bare IPv6 without brackets
    host = i >= 0 ? name.slice(0, i) : name;
    portText = i >= 0 ? name.slice(i + 1) : undefined;
    if (!host || !/^[A-Za-z0-9.-]+$/.test(host)) return undefined;
  }
  if (portText === undefined) return { host, port: undefined };
  if (!/^\d{1,5}$/.test(portText)) return undefined;
  const port = Number(portText);
  if (port < 1 || port > 65535) return undefined;
  return { host, port };
}

function hostPortText(host: string, port: number | undefined): string {
  const h = isIP(host) === 6 ? `[${host}]` : host;
  return port === undefined ? h : `${h}:${port}`;
}

export function createFederationClient(deps: FederationClientDeps): FederationClient {
  const { clock, logger } = deps;
  const connectTimeoutMs = deps.connectTimeoutMs ?? 5_000;
  const requestTimeoutMs = deps.requestTimeoutMs ?? 30_000;
  const cacheMs = deps.resolutionCacheMs ?? 3_600_000;
  const wellKnownPort = deps.wellKnownPort ?? 443;
  const resolver = new Resolver({ timeout: connectTimeoutMs, tries: 2 });
  const resolveSrv = deps.resolveSrv ?? ((name: string) => resolver.resolveSrv(name));
  const cache = new Map<string, { value: ResolvedServer; until: number }>();
  // Keep-alive connections to homeservers (Node keys them by host, port, SNI and TLS options).
  const agent = new Agent({
    keepAlive: true,
    maxSockets: 64,
    rejectUnauthorized: !deps.insecureSkipVerifyTls,
    ...(deps.tlsCa?.length ? { ca: deps.tlsCa } : {}),
  });

  function getJson(target: ResolvedServer, path: string): Promise<HttpsJsonResult> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const finish = (err: Error | undefined, value?: HttpsJsonResult) => {
        if (settled) return;
        settled = true;
        clearTimeout(total);
        clearTimeout(connect);
        if (err) reject(err);
        else resolve(value!);
      };
      const req = httpsRequest({
        host: target.host,
        port: target.port,
        path,
        method: 'GET',
        servername: target.sni,
        headers: { Host: target.hostHeader, Accept: 'application/json' },
        rejectUnauthorized: !deps.insecureSkipVerifyTls,
        ...(deps.tlsCa?.length ? { ca: deps.tlsCa } : {}),
        agent,
      });
      const total = setTimeout(() => {
        req.destroy(new Error(`request to ${target.hostHeader} timed out after ${requestTimeoutMs} ms`));
      }, requestTimeoutMs);
      const connect = setTimeout(() => {
        req.destroy(new Error(`connecting to ${target.hostHeader} timed out after ${connectTimeoutMs} ms`));
      }, connectTimeoutMs);
      req.on('socket', (socket) => {
        if (!socket.connecting) {
          clearTimeout(connect); // a reused keep-alive connection
          return;
        }
        socket.once('secureConnect', () => clearTimeout(connect));
      });
      req.on('error', (err) => finish(err));
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_RESPONSE_BYTES) {
            req.destroy(new Error('response too large'));
            return;
          }
          chunks.push(c);
        });
        res.on('error', (err) => finish(err));
        res.on('end', () => {
          let json: unknown;
          try {
            json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            json = undefined;
          }
          finish(undefined, { status: res.statusCode ?? 0, json });
        });
      });
      req.end();
    });
  }

  async function srvTarget(hostname: string): Promise<{ host: string; port: number } | undefined> {
    try {
      const records = await resolveSrv(`_matrix._tcp.${hostname}`);
      const best = records.toSorted((a, b) => a.priority - b.priority || b.weight - a.weight)[0];
      if (!best || best.name === '.' || !best.name) return undefined;
      return { host: best.name.replace(/\.$/, ''), port: best.port };
    } catch {
      return undefined;
    }
  }

  async function wellKnownDelegation(hostname: string): Promise<string | undefined> {
    try {
      const res = await getJson(
        { host: hostname, port: wellKnownPort, sni: isIP(hostname) ? undefined : hostname, hostHeader: hostname },
        '/.well-known/matrix/server',
      );
      if (res.status < 200 || res.status >= 300) return undefined;
      const server = (res.json as Record<string, unknown> | undefined)?.['m.server'];
      return typeof server === 'string' && splitHostPort(server) ? server : undefined;
    } catch (err) {
      logger.debug({ serverName: hostname, err: (err as Error).message }, 'no .well-known/matrix/server');
      return undefined;
    }
  }

  async function resolveUncached(serverName: string): Promise<ResolvedServer> {
    const parsed = splitHostPort(serverName);
    if (!parsed) throw new OpenIdVerificationError(`"${serverName}" is not a valid server name`);
    const { host, port } = parsed;
    // 1. IP literal; 2. explicit port.
    if (isIP(host)) return { host, port: port ?? 8448, sni: undefined, hostHeader: hostPortText(host, port) };
    if (port !== undefined) return { host, port, sni: host, hostHeader: serverName };
    // 3. .well-known delegation.
    const delegated = await wellKnownDelegation(host);
    if (delegated) {
      const d = splitHostPort(delegated)!;
      if (isIP(d.host)) return { host: d.host, port: d.port ?? 8448, sni: undefined, hostHeader: hostPortText(d.host, d.port) };
      if (d.port !== undefined) return { host: d.host, port: d.port, sni: d.host, hostHeader: delegated };
      const srv = await srvTarget(d.host);
      if (srv) return { host: srv.host, port: srv.port, sni: d.host, hostHeader: d.host };
      return { host: d.host, port: 8448, sni: d.host, hostHeader: d.host };
    }
    // 4. SRV; 5. port 8448.
    const srv = await srvTarget(host);
    if (srv) return { host: srv.host, port: srv.port, sni: host, hostHeader: host };
    return { host, port: 8448, sni: host, hostHeader: host };
  }

  async function resolveServerName(serverName: string): Promise<ResolvedServer> {
    const hit = cache.get(serverName);
    if (hit && hit.until > clock.now()) return hit.value;
    const value = await resolveUncached(serverName);
    cache.set(serverName, { value, until: clock.now() + cacheMs });
    return value;
  }

  return {
    close: () => agent.destroy(),
    resolveServerName,
    getJson,
    async verifyOpenIdToken(accessToken, matrixServerName) {
      const target = await resolveServerName(matrixServerName);
      let res: HttpsJsonResult;
      try {
        res = await getJson(target, `/_matrix/federation/v1/openid/userinfo?access_token=${encodeURIComponent(accessToken)}`);
      } catch (err) {
        throw new OpenIdVerificationError(`userinfo request to ${matrixServerName} failed: ${(err as Error).message}`);
      }
      if (res.status < 200 || res.status >= 300) {
        throw new OpenIdVerificationError(`userinfo from ${matrixServerName} answered ${res.status}`);
      }
      const sub = (res.json as Record<string, unknown> | undefined)?.sub;
      if (typeof sub !== 'string' || !sub) throw new OpenIdVerificationError('userinfo answer has no "sub"');
      const i = sub.indexOf(':');
      if (i < 0 || sub.slice(i + 1) !== matrixServerName) {
        throw new OpenIdVerificationError(`userinfo "sub" ${sub} does not belong to ${matrixServerName}`);
      }
      return sub;
    },
  };
}
