/**
 * The fake homeserver's rooms, users and events: what Synapse 1.132 persists and how it
 * authorises writes that matter to calls. Rooms have versions (`10`, `11`,
 * `org.matrix.msc3757.10/.11`), power levels, memberships and current state; state writes are
 * checked like synapse/event_auth.py (sender joined, power level for the event type, the
 * `@`-owned state key rule, MSC3757's "strictly higher power level" rule); identical state
 * re-sends are no-ops returning the existing event id (README rule 17); redactions empty the
 * content (keeping the keys the redaction algorithm keeps) and mark the event
 * `redacted_because`. The state right after each membership event is kept, so a user who left
 * reads the state at their leave (`stateAfter`). Every persisted event is reported to `onEvent`
 * listeners (the appservice pusher).
 */
import { randomBytes } from 'node:crypto';
import type { Clock } from '../../common/clock.ts';

export interface StoredEvent {
  event_id: string;
  type: string;
  room_id: string;
  sender: string;
  origin_server_ts: number;
  content: Record<string, unknown>;
  state_key?: string;
  redacts?: string;
  /** The state this event replaced, when there was one. */
  prev?: { event_id: string; content: Record<string, unknown>; sender: string };
  invite_room_state?: Record<string, unknown>[];
  /** The redaction that emptied this event. */
  redacted_because?: StoredEvent;
  /** MSC4354: the top-level `msc4354_sticky` of a sticky event, as the client asked (matrix-rtc.ts). */
  sticky?: { duration_ms: number };
}

export interface FakeRoom {
  roomId: string;
  version: string;
  /** `${type}\0${state_key}` -> event id */
  state: Map<string, string>;
  events: Map<string, StoredEvent>;
  /** membership event id -> the room state right after it (state at a leave). */
  memberSnapshots: Map<string, Map<string, string>>;
  /** Published aliases (`#a:hs`), for the appservice `aliases` namespace. */
  aliases: string[];
}

export interface FakeUser {
  userId: string;
  accessTokens: Set<string>;
  admin: boolean;
}

export class MatrixApiError extends Error {
  readonly status: number;
  readonly errcode: string;
  readonly extra: Record<string, unknown>;
  constructor(status: number, errcode: string, message: string, extra: Record<string, unknown> = {}) {
    super(message);
    this.name = 'MatrixApiError';
    this.status = status;
    this.errcode = errcode;
    this.extra = extra;
  }
}

export const MSC3757_VERSIONS = new Set(['org.matrix.msc3757.10', 'org.matrix.msc3757.11']);
const KNOWN_VERSIONS = new Set(['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', ...MSC3757_VERSIONS]);

const randomLetters = (n: number) =>
  Array.from(randomBytes(n), (b) => String.fromCharCode(65 + (b % 26) + (b & 32))).join('');

export interface CreateRoomOptions {
  version?: string;
  invite?: string[];
  name?: string;
  preset?: 'private_chat' | 'public_chat' | 'trusted_private_chat';
  power_level_content_override?: Record<string, unknown>;
}

export interface HomeserverModel {
  readonly serverName: string;
  readonly rooms: Map<string, FakeRoom>;
  readonly users: Map<string, FakeUser>;
  registerUser(localpart: string, opts?: { admin?: boolean }): { userId: string; accessToken: string };
  userForToken(token: string): FakeUser | undefined;
  createRoom(creator: string, opts?: CreateRoomOptions): string;
  membershipOf(roomId: string, userId: string): string | undefined;
  joinedMembers(roomId: string): string[];
  joinedRooms(userId: string): string[];
  setMembership(sender: string, roomId: string, target: string, membership: 'invite' | 'join' | 'leave' | 'ban', reason?: string): string;
  /** Writes state after the auth checks; returns the event id (the existing one for an identical re-send). */
  sendState(sender: string, roomId: string, type: string, stateKey: string, content: Record<string, unknown>): string;
  sendEvent(sender: string, roomId: string, type: string, content: Record<string, unknown>, opts?: { sticky?: { duration_ms: number } }): string;
  redact(sender: string, roomId: string, eventId: string, reason?: string): string;
  stateEvent(roomId: string, type: string, stateKey: string): StoredEvent | undefined;
  currentState(roomId: string): StoredEvent[];
  /** The state right after a membership event (undefined for other events). */
  stateAfter(roomId: string, memberEventId: string): StoredEvent[] | undefined;
  /** Joined members whose server is this homeserver. */
  localJoinedMembers(roomId: string): string[];
  addAlias(roomId: string, alias: string): void;
  powerLevel(roomId: string, userId: string): number;
  onEvent(listener: (ev: StoredEvent) => void): () => void;
  room(roomId: string): FakeRoom;
}

const stateKeyOf = (type: string, key: string) => `${type}\u0000${key}`;
/** Stripped state for invites: {content, sender, state_key, type}. */
const strip = (e: StoredEvent | undefined) => (e ? { content: e.content, sender: e.sender, state_key: e.state_key!, type: e.type } : undefined);

export function createHomeserverModel(deps: { serverName: string; clock: Clock }): HomeserverModel {
  const { serverName, clock } = deps;
  const rooms = new Map<string, FakeRoom>();
  const users = new Map<string, FakeUser>();
  const listeners = new Set<(ev: StoredEvent) => void>();
  let lastTs = 0;

  function room(roomId: string): FakeRoom {
    const r = rooms.get(roomId);
    if (!r) throw new MatrixApiError(404, 'M_NOT_FOUND', `Unknown room ${roomId}`);
    return r;
  }

  function stateEvent(roomId: string, type: string, key: string): StoredEvent | undefined {
    const r = room(roomId);
    const id = r.state.get(stateKeyOf(type, key));
    return id ? r.events.get(id) : undefined;
  }

  function membershipOf(roomId: string, userId: string): string | undefined {
    const c = stateEvent(roomId, 'm.room.member', userId)?.content.membership;
    return typeof c === 'string' ? c : undefined;
  }

  function powerLevels(roomId: string): Record<string, unknown> {
    return stateEvent(roomId, 'm.room.power_levels', '')?.content ?? {};
  }

  function powerLevel(roomId: string, userId: string): number {
    const pl = powerLevels(roomId);
    const usersPl = (pl.users ?? {}) as Record<string, number>;
    if (typeof usersPl[userId] === 'number') return usersPl[userId];
    return typeof pl.users_default === 'number' ? pl.users_default : 0;
  }

  function requiredLevel(roomId: string, type: string, isState: boolean): number {
    const pl = powerLevels(roomId);
    const events = (pl.events ?? {}) as Record<string, number>;
    if (typeof events[type] === 'number') return events[type];
    if (isState) return typeof pl.state_default === 'number' ? pl.state_default : 50;
    return typeof pl.events_default === 'number' ? pl.events_default : 0;
  }

  function persist(ev: Omit<StoredEvent, 'event_id' | 'origin_server_ts'>): StoredEvent {
    const r = room(ev.room_id);
    const ts = Math.max(clock.now(), lastTs + 1);
    lastTs = ts;
    const stored: StoredEvent = { ...ev, event_id: `$${randomBytes(32).toString('base64url').slice(0, 43)}`, origin_server_ts: ts };
    if (ev.state_key !== undefined) {
      const prevId = r.state.get(stateKeyOf(ev.type, ev.state_key));
      const prev = prevId ? r.events.get(prevId) : undefined;
      if (prev) stored.prev = { event_id: prev.event_id, content: prev.content, sender: prev.sender };
      r.state.set(stateKeyOf(ev.type, ev.state_key), stored.event_id);
      if (ev.type === 'm.room.member') r.memberSnapshots.set(stored.event_id, new Map(r.state));
    }
    r.events.set(stored.event_id, stored);
    for (const l of listeners) {
      try {
        l(stored);
      } catch {
        // a listener's failure never blocks persistence
      }
    }
    return stored;
  }

  function requireJoined(roomId: string, userId: string): void {
    if (membershipOf(roomId, userId) !== 'join') {
      throw new MatrixApiError(403, 'M_FORBIDDEN', `User ${userId} not in room ${roomId}`);
    }
  }

  function checkStateAuth(sender: string, roomId: string, type: string, stateKey: string): void {
    requireJoined(roomId, sender);
    const senderLevel = powerLevel(roomId, sender);
    if (senderLevel < requiredLevel(roomId, type, true)) {
      throw new MatrixApiError(403, 'M_FORBIDDEN', "You don't have permission to post that to the room. user_level (" + senderLevel + ') < send_level (' + requiredLevel(roomId, type, true) + ')');
    }
    if (!stateKey.startsWith('@') || stateKey === sender) return;
    const r = room(roomId);
    if (!MSC3757_VERSIONS.has(r.version)) {
      throw new MatrixApiError(403, 'M_FORBIDDEN', 'You are not allowed to set others state');
    }
    // MSC3757: the key's user part runs to the first `_` after the first `:`.
    const colon = stateKey.indexOf(':');
    const sep = colon < 0 ? -1 : stateKey.indexOf('_', colon);
    const owner = sep < 0 ? stateKey : stateKey.slice(0, sep);
    if (colon < 2) throw new MatrixApiError(400, 'M_BAD_JSON', 'State key is not a valid user ID');
    if (owner === sender) return;
    if (senderLevel > powerLevel(roomId, owner)) return;
    throw new MatrixApiError(403, 'M_FORBIDDEN', 'You are not allowed to set others state');
  }

  const model: HomeserverModel = {
    serverName,
    rooms,
    users,
    room,
    registerUser(localpart, opts = {}) {
      const userId = `@${localpart}:${serverName}`;
      let u = users.get(userId);
      if (!u) users.set(userId, (u = { userId, accessTokens: new Set(), admin: Boolean(opts.admin) }));
      const accessToken = `syt_${Buffer.from(localpart).toString('base64url')}_${randomLetters(20)}`;
      u.accessTokens.add(accessToken);
      return { userId, accessToken };
    },
    userForToken(token) {
      for (const u of users.values()) if (u.accessTokens.has(token)) return u;
      return undefined;
    },
    createRoom(creator, opts = {}) {
      const version = opts.version ?? '10';
      if (!KNOWN_VERSIONS.has(version)) throw new MatrixApiError(400, 'M_UNSUPPORTED_ROOM_VERSION', `Your homeserver does not support the features required to interact with this room`);
      const roomId = `!${randomLetters(18)}:${serverName}`;
      rooms.set(roomId, { roomId, version, state: new Map(), events: new Map(), memberSnapshots: new Map(), aliases: [] });
      const createContent: Record<string, unknown> = MSC3757_VERSIONS.has(version) || version === '11'
        ? { room_version: version }
        : { creator, room_version: version };
      persist({ type: 'm.room.create', room_id: roomId, sender: creator, state_key: '', content: createContent });
      persist({ type: 'm.room.member', room_id: roomId, sender: creator, state_key: creator, content: { displayname: creator.slice(1, creator.indexOf(':')), membership: 'join' } });
      const defaultEvents = {
        'm.room.name': 50,
        'm.room.power_levels': 100,
        'm.room.history_visibility': 100,
        'm.room.canonical_alias': 50,
        'm.room.avatar': 50,
        'm.room.tombstone': 100,
        'm.room.server_acl': 100,
        'm.room.encryption': 100,
      };
      persist({
        type: 'm.room.power_levels',
        room_id: roomId,
        sender: creator,
        state_key: '',
        content: {
          users: { [creator]: 100 },
          users_default: 0,
          events: defaultEvents,
          events_default: 0,
          state_default: 50,
          ban: 50,
          kick: 50,
          redact: 50,
          invite: 0,
          historical: 100,
          ...opts.power_level_content_override,
        },
      });
      const pub = opts.preset === 'public_chat';
      persist({ type: 'm.room.join_rules', room_id: roomId, sender: creator, state_key: '', content: { join_rule: pub ? 'public' : 'invite' } });
      persist({ type: 'm.room.history_visibility', room_id: roomId, sender: creator, state_key: '', content: { history_visibility: 'shared' } });
      if (!pub) persist({ type: 'm.room.guest_access', room_id: roomId, sender: creator, state_key: '', content: { guest_access: 'can_join' } });
      if (opts.name !== undefined) persist({ type: 'm.room.name', room_id: roomId, sender: creator, state_key: '', content: { name: opts.name } });
      for (const u of opts.invite ?? []) model.setMembership(creator, roomId, u, 'invite');
      return roomId;
    },
    membershipOf,
    joinedMembers(roomId) {
      return model.currentState(roomId).filter((e) => e.type === 'm.room.member' && e.content.membership === 'join').map((e) => e.state_key!);
    },
    joinedRooms(userId) {
      return [...rooms.keys()].filter((r) => membershipOf(r, userId) === 'join');
    },
    setMembership(sender, roomId, target, membership, reason) {
      const r = room(roomId);
      const current = membershipOf(roomId, target);
      const joinRule = stateEvent(roomId, 'm.room.join_rules', '')?.content.join_rule;
      const pl = powerLevels(roomId);
      const level = (k: string, d: number) => (typeof pl[k] === 'number' ? (pl[k] as number) : d);
      if (membership === 'join') {
        if (sender !== target) throw new MatrixApiError(403, 'M_FORBIDDEN', 'Cannot force another user to join.');
        if (current === 'ban') throw new MatrixApiError(403, 'M_FORBIDDEN', 'You are banned from this room');
        if (current !== 'invite' && current !== 'join' && joinRule !== 'public') throw new MatrixApiError(403, 'M_FORBIDDEN', 'You are not invited to this room.');
      } else if (membership === 'invite') {
        requireJoined(roomId, sender);
        if (current === 'ban') throw new MatrixApiError(403, 'M_FORBIDDEN', `${target} is banned from the room`);
        if (current === 'join') throw new MatrixApiError(403, 'M_FORBIDDEN', `${target} is already in the room.`);
        if (powerLevel(roomId, sender) < level('invite', 0)) throw new MatrixApiError(403, 'M_FORBIDDEN', 'You do not have permission to invite');
      } else if (sender !== target) {
        requireJoined(roomId, sender);
        const needed = membership === 'ban' || current === 'ban' ? level('ban', 50) : level('kick', 50);
        if (powerLevel(roomId, sender) < needed || powerLevel(roomId, sender) <= powerLevel(roomId, target)) {
          throw new MatrixApiError(403, 'M_FORBIDDEN', 'You do not have permission to do that');
        }
      } else if (current !== 'join' && current !== 'invite') {
        throw new MatrixApiError(403, 'M_FORBIDDEN', `User ${target} not in room ${roomId}`);
      }
      const name = target.slice(1, target.indexOf(':'));
      const content: Record<string, unknown> = membership === 'join' || membership === 'invite' ? { displayname: name, membership } : { membership };
      if (reason !== undefined) content.reason = reason;
      const ev: Omit<StoredEvent, 'event_id' | 'origin_server_ts'> = { type: 'm.room.member', room_id: r.roomId, sender, state_key: target, content };
      if (membership === 'invite') {
        ev.invite_room_state = [
          strip(stateEvent(roomId, 'm.room.join_rules', '')),
          strip(stateEvent(roomId, 'm.room.create', '')),
          strip(stateEvent(roomId, 'm.room.name', '')),
          strip(stateEvent(roomId, 'm.room.member', sender)),
        ].filter((x): x is NonNullable<typeof x> => x !== undefined);
      }
      return persist(ev).event_id;
    },
    sendState(sender, roomId, type, stateKey, content) {
      checkStateAuth(sender, roomId, type, stateKey);
      const existing = stateEvent(roomId, type, stateKey);
      if (existing && existing.sender === sender && JSON.stringify(sortDeep(existing.content)) === JSON.stringify(sortDeep(content))) {
        return existing.event_id;
      }
      return persist({ type, room_id: roomId, sender, state_key: stateKey, content }).event_id;
    },
    sendEvent(sender, roomId, type, content, opts = {}) {
      requireJoined(roomId, sender);
      if (powerLevel(roomId, sender) < requiredLevel(roomId, type, false)) throw new MatrixApiError(403, 'M_FORBIDDEN', "You don't have permission to post that to the room.");
      return persist({ type, room_id: roomId, sender, content, ...(opts.sticky ? { sticky: opts.sticky } : {}) }).event_id;
    },
    redact(sender, roomId, eventId, reason) {
      requireJoined(roomId, sender);
      const r = room(roomId);
      const target = r.events.get(eventId);
      if (!target) throw new MatrixApiError(404, 'M_NOT_FOUND', 'Event not found.');
      if (target.sender !== sender && powerLevel(roomId, sender) < (typeof powerLevels(roomId).redact === 'number' ? (powerLevels(roomId).redact as number) : 50)) {
        throw new MatrixApiError(403, 'M_FORBIDDEN', 'You don\'t have permission to redact events');
      }
      const content: Record<string, unknown> = { redacts: eventId };
      if (reason !== undefined) content.reason = reason;
      const ev = persist({ type: 'm.room.redaction', room_id: roomId, sender, content, redacts: eventId });
      target.content = redactContent(target.type, target.content, r.version);
      target.redacted_because = ev;
      return ev.event_id;
    },
    stateEvent,
    currentState(roomId) {
      const r = room(roomId);
      return [...r.state.values()].map((id) => r.events.get(id)!);
    },
    stateAfter(roomId, memberEventId) {
      const r = room(roomId);
      const snap = r.memberSnapshots.get(memberEventId);
      return snap ? [...snap.values()].map((id) => r.events.get(id)!) : undefined;
    },
    localJoinedMembers(roomId) {
      return model.joinedMembers(roomId).filter((u) => u.endsWith(`:${serverName}`));
    },
    addAlias(roomId, alias) {
      room(roomId).aliases.push(alias);
    },
    powerLevel,
    onEvent(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
  return model;
}

function sortDeep(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortDeep);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).toSorted().map((k) => [k, sortDeep((v as Record<string, unknown>)[k])]));
  return v;
}

/** Content keys the redaction algorithm keeps (room versions 10/11; the spec's redaction rules). */
const KEPT_KEYS: Record<string, string[]> = {
  'm.room.member': ['membership', 'join_authorised_via_users_server'],
  'm.room.join_rules': ['join_rule', 'allow'],
  'm.room.history_visibility': ['history_visibility'],
  'm.room.power_levels': ['ban', 'events', 'events_default', 'kick', 'redact', 'state_default', 'users', 'users_default'],
  'm.room.create': ['creator'],
};

function redactContent(type: string, content: Record<string, unknown>, version: string): Record<string, unknown> {
  const v11 = version === '11' || version === 'org.matrix.msc3757.11';
  if (type === 'm.room.create' && v11) return content;
  const keep = [...(KEPT_KEYS[type] ?? []), ...(v11 && type === 'm.room.power_levels' ? ['invite'] : [])];
  return Object.fromEntries(Object.entries(content).filter(([k]) => keep.includes(k)));
}
