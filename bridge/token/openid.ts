/**
 * Which server answers an OpenID token's `userinfo`, and asking it. A server whose client-server
 * URL the configuration names (the appservice's own homeserver: `homeserver_url`,
 * `LIVEKIT_CS_API_URL_OVERRIDES` or its `.well-known/matrix/client`; any other server named in
 * `LIVEKIT_CS_API_URL_OVERRIDES`) is asked there, at
 * `<url>/_matrix/federation/v1/openid/userinfo`, over plain HTTP too if that is what the
 * operator configured (Synapse serves it on a listener with the `client`+`federation` or
 * `openid` resource; its default 8008 listener has both). That is what lets a homeserver on
 * plain HTTP, on a LAN, behind split-horizon DNS or off port 8448 verify its own users
 * (lk-jwt-service issues #84, #129, #203). Every other server goes through federation discovery
 * (federation.ts). A 401/403 or a `sub` of another server there is final; no answer, or an
 * answer that is not userinfo (404 from a listener without the resource, a reverse proxy's
 * page), falls back to federation discovery, so a configured URL never does worse than
 * lk-jwt-service. Access tokens are never logged.
 */
import type { Logger } from '../../common/logger.ts';
import type { Fetch } from '../homeserver/client.ts';
import { OpenIdVerificationError, type FederationClient } from './federation.ts';

export interface OpenIdVerifier {
  /** The verified Matrix user id; throws OpenIdVerificationError (or a transport Error). */
  verify(accessToken: string, matrixServerName: string): Promise<string>;
}

export interface OpenIdVerifierDeps {
  logger: Logger;
  federation: Pick<FederationClient, 'verifyOpenIdToken'>;
  /** The configured client-server URL for a server name; undefined (or a throw) = none known. */
  knownClientServerUrl(serverName: string): Promise<string | undefined>;
  fetch?: Fetch;
  /** Per-request timeout (10 s). */
  timeoutMs?: number;
}

const MAX_RESPONSE_BYTES = 64 * 1024;

type Asked = { kind: 'sub'; sub: unknown } | { kind: 'rejected'; status: number } | { kind: 'unavailable'; why: string };

/** The body as text, at most `limit` bytes; undefined when longer. */
async function boundedText(res: Response, limit: number): Promise<string | undefined> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => undefined);
      return undefined;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The check federation.ts makes too: the user id's server part is the token's server name. */
export function subjectOf(sub: unknown, matrixServerName: string): string {
  if (typeof sub !== 'string' || !sub) throw new OpenIdVerificationError('userinfo answer has no "sub"');
  const i = sub.indexOf(':');
  if (i < 0 || sub.slice(i + 1) !== matrixServerName) {
    throw new OpenIdVerificationError(`userinfo "sub" ${sub} does not belong to ${matrixServerName}`);
  }
  return sub;
}

export function createOpenIdVerifier(deps: OpenIdVerifierDeps): OpenIdVerifier {
  const doFetch = deps.fetch ?? globalThis.fetch;
  const timeoutMs = deps.timeoutMs ?? 10_000;
  const warned = new Set<string>();

  async function askAt(base: string, accessToken: string): Promise<Asked> {
    let res: Response;
    try {
      res = await doFetch(`${base}/_matrix/federation/v1/openid/userinfo?access_token=${encodeURIComponent(accessToken)}`, {
        headers: { Accept: 'application/json' },
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      return { kind: 'unavailable', why: (err as Error).message };
    }
    const text = await boundedText(res, MAX_RESPONSE_BYTES).catch(() => undefined);
    if (res.status === 401 || res.status === 403) return { kind: 'rejected', status: res.status };
    if (res.status < 200 || res.status >= 300) return { kind: 'unavailable', why: `answered ${res.status}` };
    let json: unknown;
    try {
      json = text === undefined ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (typeof json !== 'object' || json === null || !('sub' in json)) return { kind: 'unavailable', why: 'the answer is not OpenID userinfo' };
    return { kind: 'sub', sub: (json as { sub: unknown }).sub };
  }

  return {
    async verify(accessToken, matrixServerName) {
      const base = await deps.knownClientServerUrl(matrixServerName).catch((err: unknown) => {
        deps.logger.debug({ serverName: matrixServerName, err: (err as Error).message }, 'client-server URL unknown; OpenID over federation');
        return undefined;
      });
      if (base) {
        const asked = await askAt(base.replace(/\/+$/, ''), accessToken);
        if (asked.kind === 'sub') return subjectOf(asked.sub, matrixServerName);
        if (asked.kind === 'rejected') throw new OpenIdVerificationError(`userinfo from ${base} answered ${asked.status}`);
        const level = warned.has(base) ? 'debug' : 'warn';
        warned.add(base);
        deps.logger[level](
          { serverName: matrixServerName, url: base, reason: asked.why },
          'OpenID userinfo not available at the configured client-server URL (does its listener serve the federation or openid resource?); using federation discovery',
        );
      }
      return deps.federation.verifyOpenIdToken(accessToken, matrixServerName);
    },
  };
}
