/**
 * What every token handler needs, assembled once by `createTokenService` (service.ts) and
 * passed to the legacy (legacy.ts) and homeserver-proxied (proxied.ts) edges.
 */
import type { Clock } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import type { DelayedLeaveManager } from './delayed-leave.ts';
import type { FederationClient } from './federation.ts';
import type { HomeserverClient } from '../homeserver/client.ts';
import type { CsApiResolver } from './cs-api-resolver.ts';
import type { TokenMinter } from './jwt.ts';
import type { MembershipChecker } from './membership.ts';
import type { MembershipMonitor } from './membership-monitor.ts';
import type { OpenIdVerifier } from './openid.ts';
import type { PublishPolicy } from './grants.ts';
import { roomCreationFailed } from './errors.ts';
import type { LiveKitRoomName } from './names.ts';
import type { SfuRoomService } from '../sfu/room-service.ts';

/** What the token service asks of the SFU. */
export type TokenSfuApi = Pick<SfuRoomService, 'createRoom' | 'participantExists'>;

export type { PublishPolicy } from './grants.ts';

export interface TokenContext {
  clock: Clock;
  logger: Logger;
  livekitUrl: string;
  fullAccessHomeservers: readonly string[];
  publishPolicy: PublishPolicy;
  federation: FederationClient;
  /** OpenID userinfo: at a configured client-server URL, else over federation (openid.ts). */
  openId: OpenIdVerifier;
  csApi: CsApiResolver;
  homeserver: HomeserverClient;
  minter: TokenMinter;
  sfu: TokenSfuApi;
  membership: MembershipChecker;
  delayedLeave: DelayedLeaveManager;
  /** Watches issued tokens' users for leaving the Matrix room (appservice mode, interval > 0). */
  monitor?: MembershipMonitor;
  appservice?: { asToken: string; hsToken: string; serverName: string };
  /** Client-server URL of our own homeserver when configured (`homeserver_url`, else its override). */
  homeserverUrl?: string;
  /** Counts answered requests by endpoint and status. */
  countRequest(endpoint: string, status: number): void;
}

/**
 * Our own homeserver's client-server API: `homeserver_url` or its `LIVEKIT_CS_API_URL_OVERRIDES`
 * entry, else its `.well-known/matrix/client` (cached by the resolver).
 */
export async function ownCsApi(ctx: TokenContext, serverName: string): Promise<string> {
  if (ctx.homeserverUrl) return ctx.homeserverUrl.replace(/\/+$/, '');
  return ctx.csApi.resolve(serverName);
}

/** CreateRoom on the SFU for a full-access user; a failure is lk-jwt-service's 500. */
export async function createSfuRoom(ctx: TokenContext, room: LiveKitRoomName): Promise<void> {
  try {
    await ctx.sfu.createRoom(room);
  } catch (err) {
    ctx.logger.error({ room, err: (err as Error).message }, 'CreateRoom on the SFU failed');
    throw roomCreationFailed();
  }
}
