/**
 * Appservice registrations as Synapse 1.132 loads and applies them: `validateRegistration`
 * rejects what `synapse/config/appservice.py` `_load_appservice` and
 * `synapse/appservice/__init__.py` `_check_namespaces` reject (missing or non-string `id`,
 * `as_token`, `hs_token`, `sender_localpart`; a `url` that is neither a string nor an explicit
 * null; a `sender_localpart` that needs URL encoding; no `namespaces` object; namespace entries
 * without a string `regex` or a boolean `exclusive`; regexes that do not compile; non-bool
 * `org.matrix.msc3202`; `|` in the id), `validateRegistrations` rejects a reused `id` or
 * `as_token` across services (`load_appservices`), and `createInterest` answers Synapse's
 * interest questions (`is_interested_in_user` / `_room` / `_event`) with Python `re.match`
 * semantics: a regex is anchored at the start only, never at the end.
 */
import type { AppserviceRegistration } from './appservice-pusher.ts';

/** A registration Synapse would refuse to load; `key` names the offending field. */
export class RegistrationError extends Error {
  readonly key: string;
  constructor(key: string, message: string) {
    super(message);
    this.name = 'RegistrationError';
    this.key = key;
  }
}

const NAMESPACES = ['users', 'aliases', 'rooms'] as const;

/** Python `re.match`: anchored at the start of the string only. */
export function pythonMatch(regex: string): RegExp {
  return new RegExp(`^(?:${regex})`);
}

/** Python's `urllib.parse.quote` leaves these unescaped (plus `/`, its default safe char). */
const URL_SAFE = /^[A-Za-z0-9_.\-~/]*$/;

export function validateRegistration(raw: unknown, source = 'registration'): AppserviceRegistration {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new RegistrationError('', `Registration is not an object (${source})`);
  const r = raw as Record<string, unknown>;
  for (const field of ['id', 'as_token', 'hs_token', 'sender_localpart']) {
    if (typeof r[field] !== 'string') throw new RegistrationError(field, `Required string field: '${field}' (${source})`);
  }
  if (typeof r.url !== 'string' && r.url !== null) {
    throw new RegistrationError('url', `Required string field or explicit null: 'url' (${source})`);
  }
  if (!URL_SAFE.test(r.sender_localpart as string)) {
    throw new RegistrationError('sender_localpart', 'sender_localpart needs characters which are not URL encoded.');
  }
  if (typeof r.namespaces !== 'object' || r.namespaces === null || Array.isArray(r.namespaces)) {
    throw new RegistrationError('namespaces', "Requires 'namespaces' object.");
  }
  const ns = r.namespaces as Record<string, unknown>;
  const namespaces = { users: [], aliases: [], rooms: [] } as AppserviceRegistration['namespaces'];
  for (const key of NAMESPACES) {
    if (!(key in ns)) continue;
    const list = ns[key];
    if (!Array.isArray(list)) throw new RegistrationError(`namespaces.${key}`, `Bad namespace value for '${key}'`);
    for (const [i, entry] of list.entries()) {
      const path = `namespaces.${key}[${i}]`;
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw new RegistrationError(path, `Expected namespace entry in ${key} to be an object`);
      const e = entry as Record<string, unknown>;
      if (typeof e.regex !== 'string') throw new RegistrationError(`${path}.regex`, `Missing/bad type 'regex' key in ${key}`);
      if (typeof e.exclusive !== 'boolean') throw new RegistrationError(`${path}.exclusive`, `Missing/bad type 'exclusive' key in ${key}`);
      try {
        pythonMatch(e.regex);
      } catch (err) {
        throw new RegistrationError(`${path}.regex`, `Bad regex in ${key}: ${(err as Error).message}`);
      }
      namespaces[key].push({ regex: e.regex, exclusive: e.exclusive });
    }
  }
  if (r.protocols !== undefined && r.protocols !== null && r.protocols !== false) {
    if (!Array.isArray(r.protocols)) throw new RegistrationError('protocols', "Optional 'protocols' must be a list if present.");
    if (r.protocols.some((p) => typeof p !== 'string')) throw new RegistrationError('protocols', "Bad value for 'protocols' item");
  }
  if (r['org.matrix.msc3202'] !== undefined && typeof r['org.matrix.msc3202'] !== 'boolean') {
    throw new RegistrationError('org.matrix.msc3202', 'The `org.matrix.msc3202` option should be true or false if specified.');
  }
  if ((r.id as string).includes('|')) throw new RegistrationError('id', "application service ID cannot contain '|' character");
  const out: AppserviceRegistration = {
    ...(r as object),
    id: r.id as string,
    url: typeof r.url === 'string' ? r.url.replace(/\/+$/, '') : null,
    as_token: r.as_token as string,
    hs_token: r.hs_token as string,
    sender_localpart: r.sender_localpart as string,
    namespaces,
    rate_limited: typeof r.rate_limited === 'boolean' ? r.rate_limited : true,
  };
  return out;
}

/** `load_appservices`: ids and as_tokens must be unique across the homeserver's services. */
export function validateRegistrations(list: readonly AppserviceRegistration[]): void {
  const ids = new Set<string>();
  const tokens = new Set<string>();
  for (const reg of list) {
    if (ids.has(reg.id)) throw new RegistrationError('id', `Cannot reuse ID across application services: ${reg.id}`);
    ids.add(reg.id);
    if (tokens.has(reg.as_token)) throw new RegistrationError('as_token', 'Cannot reuse as_token across application services');
    tokens.add(reg.as_token);
  }
}

export interface RoomFacts {
  /** Joined members of the room who are local to this homeserver. */
  localJoined: readonly string[];
  /** Aliases published for the room. */
  aliases: readonly string[];
}

export interface Interest {
  readonly botId: string;
  isUserInNamespace(userId: string): boolean;
  /** The bot, or a user in the `users` namespace (`is_interested_in_user`). */
  isInterestedInUser(userId: string): boolean;
  /** Room id in `rooms`, an alias in `aliases`, or a joined local user of interest. */
  isInterestedInRoom(roomId: string, facts: RoomFacts): boolean;
  isInterestedInEvent(ev: { type: string; sender: string; room_id: string; state_key?: string }, facts: () => RoomFacts): boolean;
}

export function createInterest(reg: AppserviceRegistration, serverName: string): Interest {
  const users = reg.namespaces.users.map((n) => pythonMatch(n.regex));
  const aliases = (reg.namespaces.aliases ?? []).map((n) => pythonMatch(n.regex));
  const rooms = (reg.namespaces.rooms ?? []).map((n) => pythonMatch(n.regex));
  const botId = `@${reg.sender_localpart}:${serverName}`;
  const isUserInNamespace = (u: string) => users.some((re) => re.test(u));
  const isInterestedInUser = (u: string) => u === botId || isUserInNamespace(u);
  const isInterestedInRoom = (roomId: string, facts: RoomFacts) =>
    rooms.some((re) => re.test(roomId)) || facts.aliases.some((a) => aliases.some((re) => re.test(a))) || facts.localJoined.some(isInterestedInUser);
  return {
    botId,
    isUserInNamespace,
    isInterestedInUser,
    isInterestedInRoom,
    isInterestedInEvent(ev, facts) {
      if (isInterestedInUser(ev.sender)) return true;
      if (ev.type === 'm.room.member' && ev.state_key !== undefined && isInterestedInUser(ev.state_key)) return true;
      return isInterestedInRoom(ev.room_id, facts());
    },
  };
}
