/**
 * What a token grants, decided in one place for every endpoint (legacy `/sfu/get` and
 * `/get_token`, MSC4195 client-server and server-server `get_token`, both
 * `delegate_delayed_leave`s): from the user's server name and the configuration only, so the
 * same user gets the same rights whichever way the request came. A user of a full-access
 * homeserver (`LIVEKIT_FULL_ACCESS_HOMESERVERS`, or `*`) may publish, makes the SFU room exist
 * and may delegate its delayed leave; anyone else only joins an existing room, and publishes
 * only under `publish_policy: everyone` (lk-jwt-service's Go release; Rust PR #222 is
 * `full_access`).
 */

/** Who may publish: everyone (lk-jwt-service Go HEAD) or full-access users only (Rust PR #222). */
export type PublishPolicy = 'everyone' | 'full_access';

export interface GrantPolicy {
  fullAccessHomeservers: readonly string[];
  publishPolicy: PublishPolicy;
}

export interface Grants {
  /** The user's server is a full-access homeserver. */
  fullAccess: boolean;
  /** `canPublish` in the LiveKit token. */
  canPublish: boolean;
  /** Whether the token service creates the SFU room (CreateRoom) for this request. */
  createRoom: boolean;
  /** Whether the user may hand its delayed leave to the service. */
  mayDelegate: boolean;
}

export function isFullAccessServer(fullAccessHomeservers: readonly string[], serverName: string): boolean {
  const list = fullAccessHomeservers;
  return (list.length === 1 && list[0] === '*') || list.includes(serverName);
}

/** The grants of a user of `userServer` (the server part of their Matrix id). */
export function grantsFor(policy: GrantPolicy, userServer: string): Grants {
  const fullAccess = isFullAccessServer(policy.fullAccessHomeservers, userServer);
  return {
    fullAccess,
    canPublish: fullAccess || policy.publishPolicy === 'everyone',
    createRoom: fullAccess,
    mayDelegate: fullAccess,
  };
}

/** lk-jwt-service's text when a user without full access asks to delegate a delayed leave. */
export const DELEGATION_RESTRICTED = 'Delegation of delayed events is only supported for full access users';
