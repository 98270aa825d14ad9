/**
 * Turns one Matrix event (client format v1, as Synapse pushes it or returns it from `/state`)
 * into what it means for calls: a device joining (or refreshing) a call, a device leaving, a
 * user leaving the room, a redaction, or nothing. Pure: no I/O, no clock. Covers every shape
 * clients send (see matrixrtc-membership-events.md): `org.matrix.msc3401.call.member` session
 * events under all state-key forms, `org.matrix.msc4143.rtc.member` sticky events and the legacy
 * `memberships` array. Ownership is checked here: a key that names someone other than the
 * sender yields `forged`. Lifetimes are bounded here too (`boundedExpiry`): whatever `expires`,
 * `expires_ts`, `created_ts` or the sticky duration say, a membership ends at most 24 h after
 * the event was sent (or received, if that was earlier), so no timer is ever armed for longer
 * and no ghost outlives a day without a refresh.
 */
import { LEGACY_SLOT_ID } from '../token/names.ts';
import type { CallMembership } from '../store/store.ts';

export const CALL_MEMBER_TYPE = 'org.matrix.msc3401.call.member';
export const RTC_MEMBER_TYPE = 'org.matrix.msc4143.rtc.member';
/** Default lifetime of a session membership without `expires` (4 h). */
export const DEFAULT_EXPIRES_MS = 4 * 60 * 60 * 1000;
/** MSC4354's maximum sticky duration (1 h); Synapse and matrix-js-sdk cap `duration_ms` to it. */
export const MAX_STICKY_MS = 60 * 60 * 1000;
/**
 * The longest a membership lives without a new event (24 h). Element Call refreshes hourly, so a
 * live device never meets it; `expires` grows by 4 h per refresh while `created_ts` stays, so
 * long calls legitimately claim more than 24 h: those are clamped, never rejected.
 */
export const MAX_MEMBERSHIP_LIFETIME_MS = 24 * 60 * 60 * 1000;

export interface MatrixEvent {
  type: string;
  room_id: string;
  sender: string;
  event_id: string;
  origin_server_ts: number;
  state_key?: string;
  content: Record<string, unknown>;
  unsigned?: Record<string, unknown>;
  redacts?: string;
  [key: string]: unknown;
}

/** A membership without identity fields that only the stored copy may know. */
export type JoinedMembership = CallMembership;

/** What ended, as far as the event tells: the key, and the device when the key names one. */
export interface EndedMembership {
  roomId: string;
  key: string;
  userId: string;
  deviceId?: string;
  /** From `prev_content` when present, for identities of memberships we never stored. */
  prev?: CallMembership;
}

export type Interpretation =
  | { kind: 'join'; membership: CallMembership }
  /** A legacy `memberships` list replaces every legacy entry of its user. */
  | { kind: 'legacy_list'; roomId: string; userId: string; memberships: CallMembership[] }
  | { kind: 'leave'; ended: EndedMembership }
  | { kind: 'room_member'; roomId: string; userId: string; membership: string }
  | { kind: 'redaction'; roomId: string; redacts: string }
  | { kind: 'forged'; roomId: string; sender: string; claimed: string }
  | { kind: 'invalid'; reason: string }
  | { kind: 'ignored' };

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
/** A number, including the infinities `JSON.parse` makes of `1e400`. */
const anyNum = (v: unknown): number | undefined => (typeof v === 'number' && !Number.isNaN(v) ? v : undefined);

/**
 * Clamps a claimed end of membership into [base, base + 24 h], where base is when the event was
 * sent (`origin_server_ts`, or when it was received if that is earlier: a remote server's clock
 * can claim the future). Below base (negative `expires`, an old `expires_ts`, `-Infinity`, or the
 * NaN of `Infinity - Infinity`) means already over, as matrix-js-sdk clients see it; above the
 * cap (`expires: 3e9`, `Infinity`, a `created_ts` in the future) is clamped.
 */
export function boundedExpiry(claimed: number, base: number): number {
  if (Number.isNaN(claimed) || claimed < base) return base;
  return Math.min(claimed, base + MAX_MEMBERSHIP_LIFETIME_MS);
}

/** Minimal shape check; anything else is `invalid` and never throws. */
export function asMatrixEvent(raw: unknown): MatrixEvent | undefined {
  if (!isObject(raw)) return undefined;
  const { type, room_id, sender, event_id, origin_server_ts, content } = raw;
  if (typeof type !== 'string' || typeof room_id !== 'string' || typeof sender !== 'string') return undefined;
  if (typeof event_id !== 'string' || typeof origin_server_ts !== 'number' || !Number.isFinite(origin_server_ts)) return undefined;
  if (!isObject(content)) return undefined;
  if ('state_key' in raw && raw.state_key !== undefined && typeof raw.state_key !== 'string') return undefined;
  return raw as MatrixEvent;
}

export interface ParsedStateKey {
  userId: string;
  /** Absent for the legacy per-user key. */
  deviceId?: string;
  form: 'v10' | 'msc3757' | 'old' | 'legacy_user';
}

/**
 * Splits a call.member state key. The user part runs to the first `_` after the first `:`
 * (the MSC3757 rule; localparts may contain `_`, server names may not).
 */
export function parseCallMemberStateKey(stateKey: string): ParsedStateKey | undefined {
  const underscored = stateKey.startsWith('_@');
  const body = underscored ? stateKey.slice(1) : stateKey;
  if (!body.startsWith('@')) return undefined;
  const colon = body.indexOf(':');
  if (colon < 2) return undefined;
  const sep = body.indexOf('_', colon);
  if (sep < 0) return underscored ? undefined : { userId: body, form: 'legacy_user' };
  const userId = body.slice(0, sep);
  const rest = body.slice(sep + 1);
  if (!rest) return undefined;
  const appSep = rest.lastIndexOf('_m.');
  if (appSep > 0) {
    return { userId, deviceId: rest.slice(0, appSep), form: underscored ? 'v10' : 'msc3757' };
  }
  return underscored ? { userId, deviceId: rest, form: 'old' } : { userId, deviceId: rest, form: 'msc3757' };
}

function slotOf(content: Record<string, unknown>): string {
  const app = str(content.application) ?? 'm.call';
  const callId = str(content.call_id) ?? '';
  if (app === 'm.call' && callId === '') return LEGACY_SLOT_ID;
  return `${app}#${callId || 'ROOM'}`;
}

function sessionMembership(ev: MatrixEvent, content: Record<string, unknown>, key: ParsedStateKey, base: number): CallMembership | undefined {
  const deviceId = str(content.device_id) ?? key.deviceId;
  if (!deviceId) return undefined;
  const created = anyNum(content.created_ts) ?? ev.origin_server_ts;
  const expires = anyNum(content.expires) ?? DEFAULT_EXPIRES_MS;
  return {
    roomId: ev.room_id,
    key: `state:${ev.state_key}`,
    source: 'session',
    userId: key.userId,
    deviceId,
    memberId: str(content.membershipID) ?? '',
    slotId: slotOf(content),
    eventId: ev.event_id,
    originServerTs: ev.origin_server_ts,
    expiresAt: boundedExpiry(created + expires, base),
  };
}

function legacyMemberships(ev: MatrixEvent, userId: string, list: unknown[], base: number): CallMembership[] {
  const out: CallMembership[] = [];
  for (const entry of list) {
    if (!isObject(entry)) continue;
    const deviceId = str(entry.device_id);
    if (!deviceId) continue;
    const created = anyNum(entry.created_ts) ?? ev.origin_server_ts;
    const expiresAt = boundedExpiry(anyNum(entry.expires_ts) ?? created + (anyNum(entry.expires) ?? DEFAULT_EXPIRES_MS), base);
    out.push({
      roomId: ev.room_id,
      key: `legacy:${userId}:${deviceId}`,
      source: 'legacy',
      userId,
      deviceId,
      memberId: str(entry.membershipID) ?? '',
      slotId: slotOf(entry),
      eventId: ev.event_id,
      originServerTs: ev.origin_server_ts,
      expiresAt,
    });
  }
  return out;
}

function prevContentOf(ev: MatrixEvent): Record<string, unknown> | undefined {
  const p = ev.unsigned?.prev_content ?? ev.prev_content;
  return isObject(p) ? p : undefined;
}

function interpretCallMember(ev: MatrixEvent, base: number): Interpretation {
  const stateKey = ev.state_key;
  if (stateKey === undefined) return { kind: 'ignored' };
  const key = parseCallMemberStateKey(stateKey);
  if (!key) return { kind: 'invalid', reason: `unrecognised call.member state key "${stateKey}"` };
  if (key.userId !== ev.sender) return { kind: 'forged', roomId: ev.room_id, sender: ev.sender, claimed: key.userId };
  const content = ev.content;

  if (key.form === 'legacy_user') {
    const list = Array.isArray(content.memberships) ? content.memberships : [];
    return { kind: 'legacy_list', roomId: ev.room_id, userId: key.userId, memberships: legacyMemberships(ev, key.userId, list, base) };
  }
  if (Object.keys(content).length === 0) {
    const prev = prevContentOf(ev);
    const prevMembership = prev && Object.keys(prev).length ? sessionMembership(ev, prev, key, base) : undefined;
    return {
      kind: 'leave',
      ended: { roomId: ev.room_id, key: `state:${stateKey}`, userId: key.userId, deviceId: key.deviceId, prev: prevMembership },
    };
  }
  const m = sessionMembership(ev, content, key, base);
  if (!m) return { kind: 'invalid', reason: 'call.member content without device_id' };
  return { kind: 'join', membership: m };
}

/**
 * MSC4354 as Synapse implements it (rust/src/events/mod.rs `sticky_duration`): an event is sticky
 * when its top-level `msc4354_sticky` (or the stable `sticky`) has a non-negative integer
 * `duration_ms`; the duration is capped at 1 h. Anything else is not a sticky event.
 */
function stickyDurationOf(ev: MatrixEvent): number | undefined {
  for (const k of ['msc4354_sticky', 'sticky']) {
    const s = ev[k];
    if (!isObject(s)) continue;
    const d = s.duration_ms;
    if (typeof d === 'number' && Number.isInteger(d) && d >= 0) return Math.min(d, MAX_STICKY_MS);
  }
  return undefined;
}

/**
 * When a sticky event stops being sticky. Synapse (rust/src/events/serialize.rs) and
 * matrix-js-sdk (`MatrixEvent.unstableStickyExpiresAt`) both count from
 * min(origin_server_ts, now); Synapse also says what is left in
 * `unsigned.msc4354_sticky_duration_ttl_ms` when it serialises the event (for an appservice:
 * when it sends the transaction). The TTL is relative, so it is immune to clock skew between the
 * homeserver and us; it is used when we know when the event arrived, never beyond the duration.
 */
function stickyExpiry(ev: MatrixEvent, durationMs: number, base: number, receivedAt: number | undefined): number {
  const ttl = isObject(ev.unsigned) ? num(ev.unsigned.msc4354_sticky_duration_ttl_ms) : undefined;
  if (receivedAt !== undefined && ttl !== undefined && ttl >= 0) return Math.min(receivedAt + ttl, base + durationMs);
  return base + durationMs;
}

function interpretRtcMember(ev: MatrixEvent, base: number, receivedAt: number | undefined): Interpretation {
  const content = ev.content;
  // matrix-js-sdk (membershipData/rtc.ts) accepts the stable `sticky_key` as well.
  const stickyKey = str(content.msc4354_sticky_key) ?? str(content.sticky_key);
  if (!stickyKey) return { kind: 'invalid', reason: 'rtc.member without msc4354_sticky_key' };
  const key = `sticky:${ev.sender}:${stickyKey}`;
  const member = content.member;
  // A leave: only the sticky key (and `slot_id`), as matrix-js-sdk's StickyEventMembershipManager
  // sends its hang-up and its delayed leave, or a member marked `membership: "leave"` (later MSC4143
  // drafts). Keyed by sender, it can only end the sender's own membership.
  if (!isObject(member) || member.membership === 'leave') {
    return { kind: 'leave', ended: { roomId: ev.room_id, key, userId: ev.sender } };
  }
  const durationMs = stickyDurationOf(ev);
  // Not sticky (a homeserver without MSC4354 dropped the duration): clients do not count it either.
  if (durationMs === undefined) return { kind: 'invalid', reason: 'rtc.member join that is not a sticky event (no msc4354_sticky.duration_ms)' };
  const userId = str(member.user_id);
  const deviceId = str(member.device_id);
  if (!userId || !deviceId) return { kind: 'invalid', reason: 'rtc.member member without user_id/device_id' };
  if (userId !== ev.sender) return { kind: 'forged', roomId: ev.room_id, sender: ev.sender, claimed: userId };
  return {
    kind: 'join',
    membership: {
      roomId: ev.room_id,
      key,
      source: 'sticky',
      userId,
      deviceId,
      memberId: str(member.id) ?? '',
      slotId: str(content.slot_id) ?? LEGACY_SLOT_ID,
      eventId: ev.event_id,
      originServerTs: ev.origin_server_ts,
      expiresAt: stickyExpiry(ev, durationMs, base, receivedAt),
    },
  };
}

/**
 * What one event means for calls. Never throws. `receivedAt` (epoch ms on our clock, when the
 * transaction or the state read arrived) bounds lifetimes when the sender's clock runs ahead and
 * lets the sticky TTL count; without it lifetimes count from `origin_server_ts` alone.
 */
export function interpretEvent(raw: unknown, receivedAt?: number): Interpretation {
  const ev = asMatrixEvent(raw);
  if (!ev) return { kind: 'invalid', reason: 'not a Matrix event (missing type, room_id, sender, event_id, origin_server_ts or content)' };
  const base = receivedAt === undefined ? ev.origin_server_ts : Math.min(ev.origin_server_ts, receivedAt);
  switch (ev.type) {
    case CALL_MEMBER_TYPE:
      return interpretCallMember(ev, base);
    case RTC_MEMBER_TYPE:
      return interpretRtcMember(ev, base, receivedAt);
    case 'm.room.member': {
      const membership = str(ev.content.membership);
      if (ev.state_key === undefined || !membership) return { kind: 'invalid', reason: 'm.room.member without state_key or membership' };
      return { kind: 'room_member', roomId: ev.room_id, userId: ev.state_key, membership };
    }
    case 'm.room.redaction': {
      const redacts = str(ev.redacts) ?? str(ev.content.redacts);
      return redacts ? { kind: 'redaction', roomId: ev.room_id, redacts } : { kind: 'invalid', reason: 'redaction without redacts' };
    }
    default:
      return { kind: 'ignored' };
  }
}
