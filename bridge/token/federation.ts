/**
 * OpenID verification against the user's homeserver over federation
 * (`GET /_matrix/federation/v1/openid/userinfo`), with server-name resolution as the federation
 * spec and gomatrixserverlib do it: IP literal (port 8448 unless given), explicit port as is,
 * else `/.well-known/matrix/server` delegation, SRV `_matrix._tcp`, then port 8448. Requests go
 * over HTTPS with the server name as SNI and Host, bounded by a 3 s connect and an 8 s total
 * timeout. Certificate checks are skipped only when the config said exactly
 * `LIVEKIT_INSECURE_SKIP_VERIFY_TLS=YES_I_KNOW_WHAT_I_AM_DOING` (resolved into a boolean by
 * bridge/config.ts).
 *
 * A server name comes from any client, so (address-policy.ts) it must follow the Matrix
 * grammar with numeric IPv4 disguises refused, and unless `federation_allow_private_addresses`
 * is on every connection, to the name itself or wherever SRV / `.well-known` delegate, goes only
 * to public addresses (checked on the address connected to). OpenID verifications, the look-ups
 * any client can start, run at most `federation_max_concurrent_lookups` at a time with
 * `federation_max_queued_lookups` waiting; beyond that they are refused with
 * FederationBusyError (503, Retry-After). (`getJson` for the client-server API resolution is not
 * limited: it runs only after a full-access homeserver verified a token, and for delayed-leave
 * jobs, which must not be dropped for being busy.) A resolution is
 * cached (LRU, 1,024 names, 1 h) once its server answered over HTTP; one whose server could
 * not be reached is remembered as failed for 30 s, so repeating it costs nothing.
 * Network timeouts run on real time (they bound real sockets), cache expiry on the clock.
 */
import { Agent, request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import type { SrvRecord } from 'node:dns';
import { Resolver } from 'node:dns/promises';
import type { Clock } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import type { BridgeConfig } from '../config.ts';
import { createAddressPolicy, isValidServerHost, type AddressPolicy } from './address-policy.ts';
import { createConcurrencyLimiter, ExpiringLru } from './outbound-limits.ts';

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
  /** Per-request connect timeout (3 s). */
  connectTimeoutMs?: number;
  /** Per-request total timeout (8 s). */
  requestTimeoutMs?: number;
  /** How long a resolution is reused (1 h). */
  resolutionCacheMs?: number;
  /** How many server names the resolution cache keeps, and the failure cache too (1,024). */
  resolutionCacheSize?: number;
  /** How long a server name whose server could not be reached is answered as failed (30 s). */
  resolutionFailureCacheMs?: number;
  /** Connect to loopback, private, link-local... addresses too (false; tests and LAN trials). */
  allowPrivateAddresses?: boolean;
  /** Host-name resolver used when connecting (default dns.lookup); tests map names to addresses. */
  lookup?: Parameters<typeof createAddressPolicy>[1];
  /** Outbound look-ups (OpenID verification, `.well-known` fetches) in flight at once (16). */
  maxConcurrentLookups?: number;
  /** Look-ups waiting for a slot before new ones are refused with FederationBusyError (64). */
  maxQueuedLookups?: number;
}

/** The federation-client settings of the bridge config (bridge YAML `federation_*` keys). */
export function federationOptionsOf(
  config: Pick<BridgeConfig, 'federation_allow_private_addresses' | 'federation_max_concurrent_lookups' | 'federation_max_queued_lookups'>,
): Pick<FederationClientDeps, 'allowPrivateAddresses' | 'maxConcurrentLookups' | 'maxQueuedLookups'> {
  return {
    allowPrivateAddresses: config.federation_allow_private_addresses,
    maxConcurrentLookups: config.federation_max_concurrent_lookups,
    maxQueuedLookups: config.federation_max_queued_lookups,
  };
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
  /**
   * Throws AddressRefusedError when the address policy refuses the host of `url` (an IP
   * literal, or a name with no allowed address), for URLs others fetch, such as a
   * `.well-known/matrix/client` base URL.
   */
  checkUrlHost(url: string): Promise<void>;
}

const MAX_RESPONSE_BYTES = 64 * 1024;

/**
 * Splits a Matrix server name `host[:port]` / `[v6][:port]`; undefined when it does not follow
 * the grammar (see isValidServerHost: numeric IPv4 disguises are refused here).
 */
export function splitHostPort(name: string): { host: string; port: number | undefined } | undefined {
  if (!name || name.length > 300) return undefined;
  let host: string;
  let portText: string | undefined;
  if (name.startsWith('[')) {
    const end = name.indexOf(']');
    if (end < 0) return undefined;
    host = name.slice(1, end);
    const rest = name.slice(end + 1);
    if (rest && !rest.startsWith(':')) return undefined;
    portText = rest ? rest.slice(1) : undefined;
    if (!isValidServerHost(host, true)) return undefined;
  } else {
    const i = name.lastIndexOf(':');
    if (i >= 0 && name.indexOf(':') !== i) return undefined; // bare IPv6 without brackets
    host = i >= 0 ? name.slice(0, i) : name;
    portText = i >= 0 ? name.slice(i + 1) : undefined;
    if (!host || !isValidServerHost(host, false)) return undefined;
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
  const connectTimeoutMs = deps.connectTimeoutMs ?? 3_000;
  const requestTimeoutMs = deps.requestTimeoutMs ?? 8_000;
  const cacheMs = deps.resolutionCacheMs ?? 3_600_000;
  const failureCacheMs = deps.resolutionFailureCacheMs ?? 30_000;
  const wellKnownPort = deps.wellKnownPort ?? 443;
  const resolver = new Resolver({ timeout: connectTimeoutMs, tries: 2 });
  const resolveSrv = deps.resolveSrv ?? ((name: string) => resolver.resolveSrv(name));
  const cacheSize = deps.resolutionCacheSize ?? 1024;
  const cache = new ExpiringLru<ResolvedServer>(clock, cacheSize);
  const failures = new ExpiringLru<string>(clock, cacheSize);
  const policy: AddressPolicy = createAddressPolicy(deps.allowPrivateAddresses ?? false, deps.lookup);
  const limiter = createConcurrencyLimiter(deps.maxConcurrentLookups ?? 16, deps.maxQueuedLookups ?? 64);
  // Keep-alive connections to homeservers (Node keys them by host, port, SNI and TLS options).
  const agent = new Agent({
    keepAlive: true,
    maxSockets: 64,
    rejectUnauthorized: !deps.insecureSkipVerifyTls,
    ...(deps.tlsCa?.length ? { ca: deps.tlsCa } : {}),
  });

  function getJson(target: ResolvedServer, path: string): Promise<HttpsJsonResult> {
    try {
      policy.checkLiteral(target.host); // an IP literal never reaches the lookup
    } catch (err) {
      return Promise.reject(err as Error);
    }
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
        ...(policy.lookup ? { lookup: policy.lookup } : {}),
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
    const failed = failures.get(serverName);
    if (failed !== undefined) throw new OpenIdVerificationError(`${serverName} failed moments ago (${failed}); not retried yet`);
    return cache.get(serverName) ?? (await resolveUncached(serverName));
  }

  async function verifyOpenIdToken(accessToken: string, matrixServerName: string): Promise<string> {
    const target = await resolveServerName(matrixServerName);
    let res: HttpsJsonResult;
    try {
      res = await getJson(target, `/_matrix/federation/v1/openid/userinfo?access_token=${encodeURIComponent(accessToken)}`);
    } catch (err) {
      const why = (err as Error).message;
      cache.delete(matrixServerName);
      failures.set(matrixServerName, why, failureCacheMs);
      throw new OpenIdVerificationError(`userinfo request to ${matrixServerName} failed: ${why}`);
    }
    // The server answered over HTTP: the resolution is right, whatever it said about the token.
    cache.set(matrixServerName, target, cacheMs);
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
  }

  return {
    close: () => agent.destroy(),
    resolveServerName,
    getJson,
    async checkUrlHost(url) {
      const host = new URL(url).hostname.replace(/^\[(.*)\]$/, '$1');
      if (isIP(host)) return policy.checkLiteral(host);
      const lookup = policy.lookup;
      if (!lookup) return;
      await new Promise<void>((resolve, reject) => lookup(host, { all: true }, (err) => (err ? reject(err) : resolve())));
    },
    verifyOpenIdToken: (accessToken, matrixServerName) => limiter.run(() => verifyOpenIdToken(accessToken, matrixServerName)),
  };
}
