/**
 * The fake homeserver's registration rules against Synapse's loader and interest code
 * (synapse/config/appservice.py, synapse/appservice/__init__.py): what a registration must
 * contain, unique ids and as_tokens, `re.match` anchoring, and the §3 interest rules.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { FIXTURES_DIR } from '../fake-homeserver/fixtures.ts';
import { createInterest, RegistrationError, validateRegistration, validateRegistrations } from '../fake-homeserver/registration.ts';
import { startFakeHomeserver, testRegistration } from '../fake-homeserver/server.ts';

const noFacts = () => ({ localJoined: [], aliases: [] });
const msgIn = (room: string) => ({ type: 'm.room.message', sender: '@carol:localhost', room_id: room });
const recordedRegistration = () => parse(readFileSync(`${FIXTURES_DIR}registration.yaml`, 'utf8')) as Record<string, unknown>;
const without = (key: string) => Object.fromEntries(Object.entries(recordedRegistration()).filter(([k]) => k !== key));

describe('registration checks (synapse/config/appservice.py)', () => {
  it('accepts the registration Synapse loaded for the fixtures, rate_limited kept', () => {
    const reg = validateRegistration(recordedRegistration());
    expect(reg).toMatchObject({ id: 'rtc-fixtures', url: 'http://127.0.0.1:18090', sender_localpart: 'rtcbot', rate_limited: false });
    expect(reg.namespaces.users).toEqual([{ exclusive: false, regex: '@.*:localhost' }]);
  });

  it.each([
    ['id', "Required string field: 'id'"],
    ['as_token', "Required string field: 'as_token'"],
    ['hs_token', "Required string field: 'hs_token'"],
    ['sender_localpart', "Required string field: 'sender_localpart'"],
    ['url', "Required string field or explicit null: 'url'"],
    ['namespaces', "Requires 'namespaces' object."],
  ])('rejects a registration without %s', (key, message) => {
    expect(() => validateRegistration(without(key))).toThrow(expect.objectContaining({ name: 'RegistrationError', key, message: expect.stringContaining(message) }));
  });

  it('rejects a url that is neither a string nor an explicit null, and accepts null (no pushes)', () => {
    expect(() => validateRegistration({ ...recordedRegistration(), url: 8008 })).toThrow(RegistrationError);
    expect(() => validateRegistration({ ...recordedRegistration(), url: ['http://x'] })).toThrow(/explicit null: 'url'/);
    expect(validateRegistration({ ...recordedRegistration(), url: null }).url).toBeNull();
  });

  it('rejects a non-bool exclusive, a missing regex, a regex that does not compile and a URL-unsafe sender_localpart', () => {
    const ns = (entry: unknown) => ({ ...recordedRegistration(), namespaces: { users: [entry], aliases: [], rooms: [] } });
    expect(() => validateRegistration(ns({ regex: '@.*', exclusive: 'yes' }))).toThrow(expect.objectContaining({ key: 'namespaces.users[0].exclusive' }));
    expect(() => validateRegistration(ns({ exclusive: true }))).toThrow(expect.objectContaining({ key: 'namespaces.users[0].regex' }));
    expect(() => validateRegistration(ns({ regex: '@(.*', exclusive: true }))).toThrow(/Bad regex/);
    expect(() => validateRegistration({ ...recordedRegistration(), sender_localpart: 'rtc bot' })).toThrow(/not URL encoded/);
  });

  it('rejects a reused id or as_token across appservices, also when starting the fake', async () => {
    const a = testRegistration(null);
    expect(() => validateRegistrations([a, { ...testRegistration(null), id: a.id }])).toThrow(/Cannot reuse ID across application services/);
    expect(() => validateRegistrations([a, { ...testRegistration(null), id: 'other', as_token: a.as_token }])).toThrow(/Cannot reuse as_token/);
    await expect(startFakeHomeserver({ registration: a, otherRegistrations: [{ ...testRegistration(null), id: a.id }] })).rejects.toThrow(RegistrationError);
  });
});

describe('namespace regexes and interest (synapse/appservice/__init__.py)', () => {
  const reg = (users: string, rooms: string[] = [], aliases: string[] = []) =>
    validateRegistration({
      ...recordedRegistration(),
      namespaces: { users: [{ regex: users, exclusive: true }], rooms: rooms.map((regex) => ({ regex, exclusive: false })), aliases: aliases.map((regex) => ({ regex, exclusive: false })) },
    });

  it('anchors a regex at the start only, like re.match', () => {
    const i = createInterest(reg('@irc_.*'), 'localhost');
    expect(i.isUserInNamespace('@irc_bob:localhost')).toBe(true);
    expect(i.isUserInNamespace('@bob_irc_x:localhost')).toBe(false);
    // Not anchored at the end: `@irc` also matches `@ircd:…` and users of other servers.
    const open = createInterest(reg('@irc'), 'localhost');
    expect(open.isUserInNamespace('@ircd:elsewhere.org')).toBe(true);
    expect(open.isUserInNamespace('x@irc:localhost')).toBe(false);
  });

  it('is interested in the bot, in namespaced senders and in namespaced member targets', () => {
    const i = createInterest(reg('@irc_.*'), 'localhost');
    expect(i.isInterestedInEvent({ type: 'm.room.message', sender: '@rtcbot:localhost', room_id: '!r:localhost' }, noFacts)).toBe(true);
    expect(i.isInterestedInEvent({ type: 'm.room.message', sender: '@irc_a:localhost', room_id: '!r:localhost' }, noFacts)).toBe(true);
    expect(i.isInterestedInEvent({ type: 'm.room.member', sender: '@carol:localhost', state_key: '@irc_a:localhost', room_id: '!r:localhost' }, noFacts)).toBe(true);
    expect(i.isInterestedInEvent({ type: 'm.room.topic', sender: '@carol:localhost', state_key: '@irc_a:localhost', room_id: '!r:localhost' }, noFacts)).toBe(false);
    expect(i.isInterestedInEvent({ type: 'm.room.message', sender: '@carol:localhost', room_id: '!r:localhost' }, noFacts)).toBe(false);
  });

  it('is interested in rooms by id, by alias, and by any joined local user of interest', () => {
    const i = createInterest(reg('@irc_.*', ['!calls'], ['#irc_']), 'localhost');
    expect(i.isInterestedInEvent(msgIn('!calls1:localhost'), () => ({ localJoined: [], aliases: [] }))).toBe(true);
    expect(i.isInterestedInEvent(msgIn('!other:localhost'), () => ({ localJoined: [], aliases: ['#irc_x:localhost'] }))).toBe(true);
    expect(i.isInterestedInEvent(msgIn('!other:localhost'), () => ({ localJoined: ['@carol:localhost', '@irc_a:localhost'], aliases: [] }))).toBe(true);
    expect(i.isInterestedInEvent(msgIn('!other:localhost'), () => ({ localJoined: ['@carol:localhost'], aliases: ['#main:localhost'] }))).toBe(false);
  });

  it('counts only local joined users: a remote user matching the regex makes no interest', async () => {
    const hs = await startFakeHomeserver({ registration: { ...testRegistration(null), namespaces: { users: [{ regex: '@irc_.*', exclusive: true }], aliases: [], rooms: [] } } });
    try {
      const m = hs.model;
      const carol = m.registerUser('carol').userId;
      const roomId = m.createRoom(carol, { preset: 'public_chat' });
      // A remote namespaced user joined (as if over federation).
      m.setMembership('@irc_far:remote.example', roomId, '@irc_far:remote.example', 'join');
      const ev = m.stateEvent(roomId, 'm.room.name', '') ?? m.stateEvent(roomId, 'm.room.create', '')!;
      const facts = () => ({ localJoined: m.localJoinedMembers(roomId), aliases: m.room(roomId).aliases });
      expect(m.joinedMembers(roomId)).toContain('@irc_far:remote.example');
      expect(hs.pusher.interested({ ...ev, sender: carol }, facts)).toBe(false);
      const irc = m.registerUser('irc_near').userId;
      m.setMembership(irc, roomId, irc, 'join');
      expect(hs.pusher.interested({ ...ev, sender: carol }, facts)).toBe(true);
    } finally {
      await hs.stop();
    }
  });
});
