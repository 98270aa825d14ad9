/**
 * Where a Matrix server's client-server API is, for the token service:
 * `LIVEKIT_CS_API_URL_OVERRIDES`, then `/.well-known/matrix/client` `m.homeserver.base_url`
 * (fetched through the federation client, so with the right SNI and TLS checks and its address
 * policy, which the base URL's host must pass too), cached 4 h on the injected clock in an LRU
 * of 1,024 names.
 * The calls made there live in ../homeserver/client.ts.
 */
import type { Clock } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import type { FederationClient } from './federation.ts';
import { splitHostPort } from './federation.ts';
import { ExpiringLru } from './outbound-limits.ts';

export class CsApiUnresolvableError extends Error {
  constructor(serverName: string, why: string) {
    super(`cannot resolve the client-server API of ${serverName}: ${why}`);
    this.name = 'CsApiUnresolvableError';
  }
}

export interface CsApiResolver {
  /** Base URL without a trailing slash; throws CsApiUnresolvableError. */
  resolve(serverName: string): Promise<string>;
}

export interface CsApiResolverDeps {
  clock: Clock;
  logger: Logger;
  federation: FederationClient;
  overrides: Record<string, string>;
  cacheMs?: number;
}

export function createCsApiResolver(deps: CsApiResolverDeps): CsApiResolver {
  const cacheMs = deps.cacheMs ?? 4 * 3_600_000;
  const cache = new ExpiringLru<string>(deps.clock, 1024);
  return {
    async resolve(serverName) {
      const override = deps.overrides[serverName];
      if (override) return override.replace(/\/+$/, '');
      const hit = cache.get(serverName);
      if (hit !== undefined) return hit;
      const hp = splitHostPort(serverName);
      if (!hp) throw new CsApiUnresolvableError(serverName, 'not a valid server name');
      let base: unknown;
      try {
        const res = await deps.federation.getJson(
          { host: hp.host, port: hp.port ?? 443, sni: /^[\d.]+$|:/.test(hp.host) ? undefined : hp.host, hostHeader: serverName },
          '/.well-known/matrix/client',
        );
        if (res.status < 200 || res.status >= 300) throw new Error(`.well-known/matrix/client answered ${res.status}`);
        base = ((res.json as Record<string, unknown> | undefined)?.['m.homeserver'] as Record<string, unknown> | undefined)?.base_url;
      } catch (err) {
        throw new CsApiUnresolvableError(serverName, (err as Error).message);
      }
      if (typeof base !== 'string' || !/^https?:\/\//.test(base)) {
        throw new CsApiUnresolvableError(serverName, 'no m.homeserver.base_url in .well-known/matrix/client');
      }
      const url = base.replace(/\/+$/, '');
      try {
        await deps.federation.checkUrlHost(url);
      } catch (err) {
        throw new CsApiUnresolvableError(serverName, (err as Error).message);
      }
      cache.set(serverName, url, cacheMs);
      return url;
    },
  };
}
