/**
 * Turns one Matrix event (client format v1, as Synapse pushes it or returns it from `/state`)
 * into what it means for calls: a device joining (or refreshing) a call, a device leaving, a
 * user leaving the room, a redaction, or nothing. Pure: no I/O, no clock. Covers every shape
 * clients send (see matrixrtc-membership-events.md): `org.matrix.msc3401.call.member` session
 * events under all state-key forms, `org.matrix.msc4143.rtc.member` sticky events and the legacy
 * `memberships` array. Ownership is checked here: a key that names someone other than the
 * sender yields `forged`.
 */
import { LEGACY_SLOT_ID } from '../token/names.ts';
import type { CallMembership } from '../store/store.ts';

export const CALL_MEMBER_TYPE = 'org.matrix.msc3401.call.member';
export const RTC_MEMBER_TYPE = 'org.matrix.msc4143.rtc.member';
/** Default lifetime of a session membership without `expires` (4 h). */
export const DEFAULT_EXPIRES_MS = 4 * 60 * 60 * 1000;
/** MSC4354's maximum sticky duration (1 h), used when the event does not say. */
export const MAX_STICKY_MS = 60 * 60 * 1000;

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

/** Minimal shape check; anything else is `invalid` and never throws. */
export function asMatrixEvent(raw: unknown): MatrixEvent | undefined {
  if (!isObject(raw)) return undefined;
  const { type, room_id, sender, event_id, origin_server_ts, content } = raw;
  if (typeof type !== 'string' || typeof room_id !== 'string' || typeof sender !== 'string') return undefined;
  if (typeof event_id !== 'string' || typeof origin_server_ts !== 'number') return undefined;
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

function sessionMembership(ev: MatrixEvent, content: Record<string, unknown>, key: ParsedStateKey): CallMembership | undefined {
  const deviceId = str(content.device_id) ?? key.deviceId;
  if (!deviceId) return undefined;
  const created = num(content.created_ts) ?? ev.origin_server_ts;
  const expires = num(content.expires) ?? DEFAULT_EXPIRES_MS;
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
    expiresAt: created + expires,
  };
}

function legacyMemberships(ev: MatrixEvent, userId: string, list: unknown[]): CallMembership[] {
  const out: CallMembership[] = [];
  for (const entry of list) {
    if (!isObject(entry)) continue;
    const deviceId = str(entry.device_id);
    if (!deviceId) continue;
    const created = num(entry.created_ts) ?? ev.origin_server_ts;
    const expiresAt = num(entry.expires_ts) ?? created + (num(entry.expires) ?? DEFAULT_EXPIRES_MS);
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

function interpretCallMember(ev: MatrixEvent): Interpretation {
  const stateKey = ev.state_key;
  if (stateKey === undefined) return { kind: 'ignored' };
  const key = parseCallMemberStateKey(stateKey);
  if (!key) return { kind: 'invalid', reason: `unrecognised call.member state key "${stateKey}"` };
  if (key.userId !== ev.sender) return { kind: 'forged', roomId: ev.room_id, sender: ev.sender, claimed: key.userId };
  const content = ev.content;

  if (key.form === 'legacy_user') {
    const list = Array.isArray(content.memberships) ? content.memberships : [];
    return { kind: 'legacy_list', roomId: ev.room_id, userId: key.userId, memberships: legacyMemberships(ev, key.userId, list) };
  }
  if (Object.keys(content).length === 0) {
    const prev = prevContentOf(ev);
    const prevMembership = prev && Object.keys(prev).length ? sessionMembership(ev, prev, key) : undefined;
    return {
      kind: 'leave',
      ended: { roomId: ev.room_id, key: `state:${stateKey}`, userId: key.userId, deviceId: key.deviceId, prev: prevMembership },
    };
  }
  const m = sessionMembership(ev, content, key);
  if (!m) return { kind: 'invalid', reason: 'call.member content without device_id' };
  return { kind: 'join', membership: m };
}

function stickyDurationOf(ev: MatrixEvent): number {
  for (const k of ['msc4354_sticky', 'sticky']) {
    const s = ev[k];
    if (isObject(s)) {
      const d = num(s.duration_ms);
      if (d !== undefined) return Math.min(d, MAX_STICKY_MS);
    }
  }
  return MAX_STICKY_MS;
}

function interpretRtcMember(ev: MatrixEvent): Interpretation {
  const content = ev.content;
  const stickyKey = str(content.msc4354_sticky_key);
  if (!stickyKey) return { kind: 'invalid', reason: 'rtc.member without msc4354_sticky_key' };
  const key = `sticky:${ev.sender}:${stickyKey}`;
  const member = content.member;
  if (!isObject(member)) {
    // Only the sticky key: a leave. It can only end the sender's own membership (keyed by sender).
    return { kind: 'leave', ended: { roomId: ev.room_id, key, userId: ev.sender } };
  }
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
      expiresAt: ev.origin_server_ts + stickyDurationOf(ev),
    },
  };
}

/** What one event means for calls. Never throws. */
export function interpretEvent(raw: unknown): Interpretation {
  const ev = asMatrixEvent(raw);
  if (!ev) return { kind: 'invalid', reason: 'not a Matrix event (missing type, room_id, sender, event_id, origin_server_ts or content)' };
  switch (ev.type) {
    case CALL_MEMBER_TYPE:
      return interpretCallMember(ev);
    case RTC_MEMBER_TYPE:
      return interpretRtcMember(ev);
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
