/**
 * Table-driven cases for the event interpreter: every state-key form, the sticky and legacy
 * shapes, leaves, forged keys, the recorded Synapse 1.132 pushes, the 24 h bound on every
 * claimed lifetime, and the sticky rtc.member events matrix-js-sdk's own
 * StickyEventMembershipManager sends (join, refresh, delayed leave, plain leave) as the fake
 * homeserver serialises them for an appservice.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { formatEvent } from '../../test/fake-homeserver/event-format.ts';
import { loadTransactions } from '../../test/fake-homeserver/fixtures.ts';
import { recordingStickyClient, startStickyMember, type SentByManager, type StickyMember } from '../../test/support/matrixrtc-sticky.ts';
import { waitFor } from '../../test/support/wait.ts';
import { liveKitIdentityForMember } from '../token/names.ts';
import { interpretEvent, parseCallMemberStateKey, DEFAULT_EXPIRES_MS, MAX_MEMBERSHIP_LIFETIME_MS, MAX_STICKY_MS } from './parse.ts';
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
    const sticky = { ...base, type: 'org.matrix.msc4143.rtc.member', sender: '@a:hs', msc4354_sticky: { duration_ms: 60_000 }, content: { slot_id: 'm.call#ROOM', member: { user_id: '@a:hs', device_id: 'D', id: 'uuid' }, msc4354_sticky_key: 'k' } };
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

const H = 60 * 60 * 1000;
const DAY = MAX_MEMBERSHIP_LIFETIME_MS;

describe('membership lifetimes are bounded to 24 h after the event', () => {
  const session = (content: Record<string, unknown>, ots = 1000) => ({
    ...base,
    origin_server_ts: ots,
    sender: '@a:hs',
    state_key: '_@a:hs_D_m.call',
    content: { application: 'm.call', call_id: '', device_id: 'D', ...content },
  });
  // `JSON.parse('1e400')` is Infinity: a body can carry it.
  const inf = JSON.parse('1e400') as number;
  it.each([
    ['a normal 4 h membership', { expires: 4 * H }, 1000 + 4 * H],
    ['expires 3e9 (past the 2^31-1 ms a timer can hold)', { expires: 3e9 }, 1000 + DAY],
    ['expires 1e400 (Infinity)', { expires: inf }, 1000 + DAY],
    ['a created_ts far in the future', { created_ts: 1e15, expires: 1000 }, 1000 + DAY],
    ['a long call: 8th refresh, expires 32 h from a created_ts 7 h back', { created_ts: 1000 - 7 * H, expires: 32 * H }, 1000 + DAY],
    ['a negative expires (already over when sent)', { expires: -5000 }, 1000],
    ['created_ts -1e400 (-Infinity)', { created_ts: -inf }, 1000],
    ['created_ts Infinity and expires -Infinity (NaN)', { created_ts: inf, expires: -inf }, 1000],
    ['a non-number expires is absent (4 h)', { expires: '3e9' }, 1000 + DEFAULT_EXPIRES_MS],
  ])('session event: %s', (_what, content, expiresAt) => {
    expect(interpretEvent(session(content))).toMatchObject({ kind: 'join', membership: { expiresAt } });
  });

  it('counts from when the event arrived when the sender`s clock claims the future', () => {
    const now = 1_800_000_000_000;
    expect(interpretEvent(session({ expires: 3e9 }, now + 1e12), now)).toMatchObject({ membership: { expiresAt: now + DAY } });
    expect(interpretEvent(session({ expires: 3e9 }, now - 10), now)).toMatchObject({ membership: { expiresAt: now - 10 + DAY } });
  });

  it.each([
    ['expires_ts far ahead', { expires_ts: 1e16 }, 1000 + DAY],
    ['expires_ts Infinity', { expires_ts: inf }, 1000 + DAY],
    ['expires_ts in the past', { expires_ts: -1 }, 1000],
    ['created_ts + expires 3e9', { created_ts: 1000, expires: 3e9 }, 1000 + DAY],
  ])('legacy memberships entry: %s', (_what, entry, expiresAt) => {
    const ev = { ...base, sender: '@a:hs', state_key: '@a:hs', content: { memberships: [{ application: 'm.call', call_id: '', device_id: 'D', ...entry }] } };
    expect(interpretEvent(ev)).toMatchObject({ kind: 'legacy_list', memberships: [{ expiresAt }] });
  });

  const rtc = (top: Record<string, unknown>, ots = 1000) => ({
    ...base,
    origin_server_ts: ots,
    type: 'org.matrix.msc4143.rtc.member',
    sender: '@a:hs',
    content: { slot_id: 'm.call#ROOM', member: { user_id: '@a:hs', device_id: 'D', id: 'u' }, msc4354_sticky_key: 'u' },
    ...top,
  });
  it.each([
    ['msc4354_sticky 1 h (what js-sdk asks for)', { msc4354_sticky: { duration_ms: H } }, 1000 + H],
    ['a duration above MSC4354`s 1 h is capped', { msc4354_sticky: { duration_ms: 1e12 } }, 1000 + MAX_STICKY_MS],
    ['the stable `sticky` field', { sticky: { duration_ms: 30_000 } }, 31_000],
    ['duration 0', { msc4354_sticky: { duration_ms: 0 } }, 1000],
  ])('sticky event: %s', (_what, top, expiresAt) => {
    expect(interpretEvent(rtc(top))).toMatchObject({ kind: 'join', membership: { source: 'sticky', expiresAt } });
  });
  it.each([
    ['no msc4354_sticky (a homeserver without MSC4354 sent a plain event)', {}],
    ['a negative duration', { msc4354_sticky: { duration_ms: -1 } }],
    ['a fractional duration', { msc4354_sticky: { duration_ms: 1.5 } }],
    ['a string duration', { msc4354_sticky: { duration_ms: '60000' } }],
    ['Infinity', { msc4354_sticky: { duration_ms: inf } }],
  ])('a join that is not sticky is invalid (Synapse and js-sdk do not treat it as sticky): %s', (_what, top) => {
    expect(interpretEvent(rtc(top))).toMatchObject({ kind: 'invalid' });
  });
  it('uses the TTL Synapse serialised when it knows when the event arrived, never beyond the duration', () => {
    const now = 5_000_000;
    // Synapse's clock 20 s ahead of ours: origin_server_ts looks 20 s later, the TTL is relative.
    const ev = rtc({ msc4354_sticky: { duration_ms: H }, unsigned: { msc4354_sticky_duration_ttl_ms: H - 1000 } }, now + 20_000);
    expect(interpretEvent(ev, now)).toMatchObject({ membership: { expiresAt: now + H - 1000 } });
    const lying = rtc({ msc4354_sticky: { duration_ms: 1000 }, unsigned: { msc4354_sticky_duration_ttl_ms: 10 * H } }, now);
    expect(interpretEvent(lying, now)).toMatchObject({ membership: { expiresAt: now + 1000 } });
    // Without the arrival time the TTL cannot count: origin_server_ts + duration.
    expect(interpretEvent(ev)).toMatchObject({ membership: { expiresAt: now + 20_000 + H } });
  });
  it('rejects an event whose origin_server_ts is not finite', () => {
    expect(interpretEvent(session({}, JSON.parse('1e400') as number))).toMatchObject({ kind: 'invalid' });
  });
});

describe('sticky rtc.member events as matrix-js-sdk`s StickyEventMembershipManager sends them', () => {
  const ROOM = '!call:localhost';
  const ALICE = '@alice:localhost';
  let member: StickyMember | undefined;
  afterEach(async () => {
    await member?.stop();
    member = undefined;
  });

  /** The event as the fake homeserver (Synapse's serialisation) pushes it, `age` ms after it was sent. */
  const pushed = (s: SentByManager, eventId: string, ots: number, age = 0) =>
    formatEvent({ event_id: eventId, type: s.type!, room_id: s.roomId, sender: ALICE, origin_server_ts: ots, content: s.content!, sticky: { duration_ms: s.stickyDurationMs! } }, ots + age);

  it('join, refresh, delayed leave: one membership with js-sdk`s own identity, ended by the delayed leave', async () => {
    const rec = recordingStickyClient(ALICE, 'DEVICEA');
    // A short expiry makes the manager refresh within a second (it refreshes at expiry - headroom).
    member = startStickyMember({ client: rec.client, roomId: ROOM, config: { membershipEventExpiryMs: 1500, membershipEventExpiryHeadroomMs: 1000 } });
    member.join();
    await waitFor('sticky join sent', () => rec.sent.some((s) => s.kind === 'sticky'));
    const [delayedLeave, join] = rec.sent;
    expect(delayedLeave).toMatchObject({ kind: 'delayed_sticky', type: 'org.matrix.msc4143.rtc.member', stickyDurationMs: MAX_STICKY_MS, delayMs: 10_000 });
    expect(join).toMatchObject({ kind: 'sticky', type: 'org.matrix.msc4143.rtc.member', stickyDurationMs: MAX_STICKY_MS });

    const t0 = 1_800_000_000_000;
    const joinEv = pushed(join!, '$join', t0, 50);
    const i = interpretEvent(joinEv, t0 + 50);
    expect(i).toMatchObject({
      kind: 'join',
      membership: { key: `sticky:${ALICE}:${member.memberId}`, source: 'sticky', userId: ALICE, deviceId: 'DEVICEA', memberId: member.memberId, slotId: 'm.call#ROOM', expiresAt: t0 + MAX_STICKY_MS },
    });
    // The LiveKit identity the bridge removes is the one js-sdk computes for the member.
    const own = await member.sawOwnEvent(joinEv);
    expect(i.kind === 'join' && liveKitIdentityForMember(i.membership.userId, i.membership.deviceId, i.membership.memberId)).toBe(own.rtcBackendIdentity);

    await waitFor('refresh sent', () => rec.sent.filter((s) => s.kind === 'sticky').length >= 2, { timeoutMs: 5_000 });
    const refresh = rec.sent.filter((s) => s.kind === 'sticky')[1]!;
    expect(refresh.content).toMatchObject({ 'm.relation': { rel_type: 'm.reference', event_id: '$join' } });
    const t1 = t0 + 55 * 60 * 1000;
    expect(interpretEvent(pushed(refresh, '$refresh', t1), t1)).toMatchObject({ kind: 'join', membership: { key: `sticky:${ALICE}:${member.memberId}`, eventId: '$refresh', expiresAt: t1 + MAX_STICKY_MS } });

    // Hang-up sends the delayed leave; its content is what the homeserver publishes.
    expect(await member.leave()).toBe(true);
    expect(rec.sent.at(-1)).toMatchObject({ kind: 'delayed_action', action: 'syd_1:send' });
    expect(delayedLeave!.content).toEqual({ slot_id: 'm.call#ROOM', msc4354_sticky_key: member.memberId });
    expect(interpretEvent(pushed(delayedLeave!, '$leave', t1 + 1000), t1 + 1000)).toMatchObject({ kind: 'leave', ended: { key: `sticky:${ALICE}:${member.memberId}`, userId: ALICE } });
  });

  it('a leave the manager sends itself (its delayed leave already gone) ends the same membership', async () => {
    const rec = recordingStickyClient(ALICE, 'DEVICEA', { delayedLeaveGone: true });
    member = startStickyMember({ client: rec.client, roomId: ROOM });
    member.join();
    await waitFor('sticky join sent', () => rec.sent.some((s) => s.kind === 'sticky'));
    expect(await member.leave()).toBe(true);
    const stickies = rec.sent.filter((s) => s.kind === 'sticky');
    expect(stickies).toHaveLength(2);
    const leave = stickies[1]!;
    expect(leave.content).toEqual({ slot_id: 'm.call#ROOM', msc4354_sticky_key: member.memberId });
    expect(leave.stickyDurationMs).toBe(MAX_STICKY_MS);
    const joined = interpretEvent(pushed(stickies[0]!, '$j', 1000));
    const left = interpretEvent(pushed(leave, '$l', 2000));
    expect(left).toMatchObject({ kind: 'leave' });
    expect(joined.kind === 'join' && left.kind === 'leave' && joined.membership.key === left.ended.key).toBe(true);
  });

  it('a member marked `membership: "leave"` (later MSC4143 drafts) is a leave, and the stable `sticky_key` is read', () => {
    const ev = { ...base, type: 'org.matrix.msc4143.rtc.member', sender: ALICE, msc4354_sticky: { duration_ms: H }, content: { slot_id: 'm.call#ROOM', member: { id: 'm1', membership: 'leave', device_id: 'D' }, sticky_key: 'm1' } };
    expect(interpretEvent(ev)).toMatchObject({ kind: 'leave', ended: { key: `sticky:${ALICE}:m1` } });
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
