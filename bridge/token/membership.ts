/**
 * The membership check lk-jwt-service lacks: a token is issued only to a user joined to the
 * Matrix room. The bridge's own tracked state answers first (`RoomMembershipOracle`, provided by
 * the appservice); where it does not know, the homeserver is asked with the appservice's
 * as_token: MSC4502 `is_joined`, falling back to `joined_members` on homeservers without it.
 * Errors become 502 "Unable to verify room membership"; not joined becomes 403 M_FORBIDDEN.
 */
import type { Logger } from '../../common/logger.ts';
import { membershipUnverifiable, notAMember } from './errors.ts';
import { HomeserverError, type HomeserverClient } from '../homeserver/client.ts';
import type { CsApiResolver } from './cs-api-resolver.ts';

/** Answers from tracked state; `undefined` = unknown (ask the homeserver). */
export interface RoomMembershipOracle {
  isJoined(roomId: string, userId: string): Promise<boolean | undefined>;
}

export interface MembershipChecker {
  readonly enabled: boolean;
  /** Resolves when joined; throws MatrixError 403 (not joined) or 502 (unknown). */
  requireJoined(roomId: string, userId: string): Promise<void>;
}

export interface MembershipCheckerDeps {
  enabled: boolean;
  logger: Logger;
  oracle?: RoomMembershipOracle;
  homeserver: HomeserverClient;
  csApi: CsApiResolver;
  /** Our homeserver, as the appservice knows it; absent = no homeserver fallback. */
  appservice?: { asToken: string; serverName: string };
  /** Client-server URL of our homeserver when configured (`homeserver_url` or its override). */
  homeserverUrl?: string;
}

export function createMembershipChecker(deps: MembershipCheckerDeps): MembershipChecker {
  const { logger } = deps;
  // config.ts turns `membership_check: true` without a registration into a ConfigError; a
  // checker built by hand that way would answer 502 to every request, so it says so.
  if (deps.enabled && !deps.appservice) {
    logger.error('membership check on without an appservice registration: every token request will answer 502');
  }

  async function askHomeserver(roomId: string, userId: string): Promise<boolean> {
    const as = deps.appservice;
    if (!as) throw new Error('no appservice registration to ask the homeserver with');
    const cs = deps.homeserverUrl ? deps.homeserverUrl.replace(/\/+$/, '') : await deps.csApi.resolve(as.serverName);
    try {
      return await deps.homeserver.isJoined(cs, as.asToken, roomId, { mxid: userId });
    } catch (err) {
      // Homeservers without MSC4502 answer 404 M_UNRECOGNIZED (or 400/405): use joined_members.
      const status = err instanceof HomeserverError ? err.status : undefined;
      if (status !== 404 && status !== 400 && status !== 405) throw err;
    }
    const members = await deps.homeserver.joinedMembers(cs, as.asToken, roomId);
    return members.has(userId);
  }

  return {
    enabled: deps.enabled,
    async requireJoined(roomId, userId) {
      if (!deps.enabled) return;
      let joined: boolean | undefined;
      try {
        joined = await deps.oracle?.isJoined(roomId, userId);
      } catch (err) {
        logger.warn({ err: (err as Error).message }, 'membership oracle failed; asking the homeserver');
      }
      // Only a tracked join is final: a tracked leave or invite may predate a join whose push has
      // not arrived yet (Element Call asks for a token right after joining the room).
      if (joined !== true) {
        try {
          joined = await askHomeserver(roomId, userId);
        } catch (err) {
          logger.warn({ roomId, err: (err as Error).message }, 'could not verify room membership');
          throw membershipUnverifiable();
        }
      }
      if (!joined) throw notAMember();
    },
  };
}
