/**
 * Table-driven cases for the event interpreter: every state-key form, the sticky and legacy
 * shapes, leaves, forged keys, and the recorded Synapse 1.132 pushes.
 */
import { describe, expect, it } from 'vitest';
import { loadTransactions } from '../../test/fake-homeserver/fixtures.ts';
import { interpretEvent, parseCallMemberStateKey, DEFAULT_EXPIRES_MS } from './parse.ts';
import { generateRegistration } from '../appservice/registration.ts';

const base = { room_id: '!r:hs', event_id: '$e', origin_server_ts: 1000, type: 'org.matrix.msc3401.call.member' };

describe('parseCallMemberStateKey', () => {
  it.each([
    ['_@bob:example.org_QWERTY_m.call', { userId: '@bob:example.org', deviceId: 'QWERTY', form: 'v10' }],
    ['@bob:example.org_QWERTY_m.call', { userId: '@bob:example.org', deviceId: 'QWERTY', form: 'msc3757' }],
    ['_@bob:example.org_QWERTY', { userId: '@bob:example.org', deviceId: 'QWERTY', form: 'old' }],
    ['@bob:example.org', { userId: '@bob:example.org', form: 'legacy_user' }],
    ['_@b_o_b:example.org:8448_DEV_m.call', { userId: '@b_o_b:example.org:8448', deviceId: 'DEV', form: 'v10' }],
  ])('%s', (key, want) => expect(parseCallMemberStateKey(key)).toEqual(want));
  it.each(['', 'garbage', '_nope', '_@bob'])('rejects %j', (key) => expect(parseCallMemberStateKey(key)).toBeUndefined());
});

describe('interpretEvent', () => {
  it('reads a session join with expiry from created_ts or origin_server_ts', () => {
    const ev = { ...base, sender: '@a:hs', state_key: '_@a:hs_D_m.call', content: { application: 'm.call', call_id: '', device_id: 'D', membershipID: 'm1', expires: 5000 } };
    expect(interpretEvent(ev)).toMatchObject({ kind: 'join', membership: { userId: '@a:hs', deviceId: 'D', memberId: 'm1', slotId: 'm.call#ROOM', expiresAt: 6000 } });
    expect(interpretEvent({ ...ev, content: { ...ev.content, created_ts: 500 } })).toMatchObject({ membership: { expiresAt: 5500 } });
    expect(interpretEvent({ ...ev, content: { device_id: 'D' } })).toMatchObject({ membership: { expiresAt: 1000 + DEFAULT_EXPIRES_MS } });
  });
  it('treats {} as a leave and a key naming another user as forged', () => {
    expect(interpretEvent({ ...base, sender: '@a:hs', state_key: '_@a:hs_D_m.call', content: {} })).toMatchObject({ kind: 'leave', ended: { userId: '@a:hs', deviceId: 'D' } });
    expect(interpretEvent({ ...base, sender: '@b:hs', state_key: '_@a:hs_D_m.call', content: {} })).toMatchObject({ kind: 'forged', claimed: '@a:hs' });
    expect(interpretEvent({ ...base, sender: '@b:hs', state_key: '@a:hs_D_m.call', content: { device_id: 'D' } })).toMatchObject({ kind: 'forged' });
  });
  it('reads sticky rtc.member joins and leaves, and forged members', () => {
    const sticky = { ...base, type: 'org.matrix.msc4143.rtc.member', sender: '@a:hs', content: { slot_id: 'm.call#ROOM', member: { user_id: '@a:hs', device_id: 'D', id: 'uuid' }, msc4354_sticky_key: 'k' } };
    expect(interpretEvent(sticky)).toMatchObject({ kind: 'join', membership: { key: 'sticky:@a:hs:k', memberId: 'uuid', source: 'sticky' } });
    expect(interpretEvent({ ...sticky, content: { msc4354_sticky_key: 'k' } })).toMatchObject({ kind: 'leave', ended: { key: 'sticky:@a:hs:k' } });
    expect(interpretEvent({ ...sticky, sender: '@b:hs' })).toMatchObject({ kind: 'forged' });
  });
  it('reads the legacy memberships array', () => {
    const ev = { ...base, sender: '@a:hs', state_key: '@a:hs', content: { memberships: [{ application: 'm.call', call_id: '', device_id: 'D', expires_ts: 9000 }] } };
    expect(interpretEvent(ev)).toMatchObject({ kind: 'legacy_list', memberships: [{ key: 'legacy:@a:hs:D', expiresAt: 9000 }] });
  });
  it('never throws on garbage', () => {
    for (const raw of [null, 1, 'x', [], {}, { type: 'm.room.member' }, { ...base, sender: '@a:hs', content: null }]) {
      expect(['invalid', 'ignored']).toContain(interpretEvent(raw).kind);
    }
  });
  it('understands every recorded Synapse push of flows 01-11', () => {
    const flows = ['01-room-created-v10', '02-alice-joins-call', '03-alice-updates-then-leaves', '04-bob-joins-call-kicked-banned', '05-forged-leave-v10', '06-msc3757-room', '07a-delayed-leave-fires', '08-redaction', '11-txn-ids-across-restarts'];
    const kinds = new Set<string>();
    for (const f of flows) for (const t of loadTransactions(f)) for (const e of t.body.events ?? []) kinds.add(interpretEvent(e).kind);
    expect(kinds).not.toContain('invalid');
    for (const k of ['join', 'leave', 'room_member', 'redaction', 'forged']) expect(kinds).toContain(k);
    const forged = loadTransactions('05-forged-leave-v10').flatMap((t) => t.body.events).map(interpretEvent).filter((i) => i.kind === 'forged');
    expect(forged).toHaveLength(1);
  });
});

describe('generateRegistration', () => {
  it('makes fresh tokens and a non-exclusive users namespace of the server', () => {
    const a = generateRegistration({ serverName: 'example.org', bridgeUrl: 'http://bridge:8080/' });
    const b = generateRegistration({ serverName: 'example.org', bridgeUrl: 'http://bridge:8080' });
    expect(a.as_token).not.toBe(b.as_token);
    expect(a.as_token).not.toBe(a.hs_token);
    expect(a.url).toBe('http://bridge:8080');
    expect(a.namespaces.users).toEqual([{ exclusive: false, regex: '@.*:example\\.org' }]);
    expect(() => generateRegistration({ serverName: 'bad name', bridgeUrl: 'http://x' })).toThrow(/server name/);
    expect(() => generateRegistration({ serverName: 'example.org', bridgeUrl: 'bridge:8080' })).toThrow(/http/);
  });
});
