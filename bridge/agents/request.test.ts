import { describe, expect, it } from 'vitest';
import { activeRequests, AGENT_REQUEST_EVENT, powerLevelOf } from './request.ts';

const CREATOR = '@carol:hs';
const create = { type: 'm.room.create', state_key: '', sender: CREATOR, event_id: '$c', content: {} };
const pl = (content: Record<string, unknown>) => ({ type: 'm.room.power_levels', state_key: '', sender: CREATOR, event_id: '$p', content });
const request = (agent: string, sender: string, content: Record<string, unknown>) => ({
  type: AGENT_REQUEST_EVENT,
  state_key: agent,
  sender,
  event_id: `$${agent}-${sender}`,
  content,
});
const policy = { allowed: ['tone', 'notes'], invitePowerLevel: 50 };

describe('power levels as Synapse computes them', () => {
  it.each([
    ['the user entry', [create, pl({ users: { '@a:hs': 75 }, users_default: 10 })], '@a:hs', 75],
    ['users_default when the user has no entry', [create, pl({ users: {}, users_default: 10 })], '@a:hs', 10],
    ['0 without users_default', [create, pl({ users: {} })], '@a:hs', 0],
    ['100 for the creator when there is no power-levels event', [create], CREATOR, 100],
    ['0 for others when there is no power-levels event', [create], '@a:hs', 0],
    ['users_default for a non-integer user entry', [create, pl({ users: { '@a:hs': '90' }, users_default: 5 })], '@a:hs', 5],
  ])('uses %s', (_what, state, user, level) => {
    expect(powerLevelOf(state, user)).toBe(level);
  });
});

describe('agent requests in room state', () => {
  const base = [create, pl({ users: { [CREATOR]: 100, '@mod:hs': 50, '@low:hs': 10 } })];
  it.each([
    ['an active request of a member at the level', [request('tone', '@mod:hs', { active: true })], ['tone:m.call#ROOM:@mod:hs']],
    ['a slot named in the request', [request('tone', CREATOR, { active: true, slot_id: 'm.call#other' })], ['tone:m.call#other:' + CREATOR]],
    ['nothing for a member below the level', [request('tone', '@low:hs', { active: true })], []],
    ['nothing for an agent not on the list', [request('other', CREATOR, { active: true })], []],
    ['nothing for empty (withdrawn or redacted) content', [request('tone', CREATOR, {})], []],
    ['nothing for active other than true', [request('tone', CREATOR, { active: 'yes' })], []],
    ['each listed agent', [request('tone', CREATOR, { active: true }), request('notes', CREATOR, { active: true })], ['tone:m.call#ROOM:' + CREATOR, 'notes:m.call#ROOM:' + CREATOR]],
    ['nothing for junk in the state array', [null, 7, { type: AGENT_REQUEST_EVENT }], []],
  ])('finds %s', (_what, events, expected) => {
    const found = activeRequests([...base, ...events], policy).map((r) => `${r.agentName}:${r.slotId}:${r.sender}`);
    expect(found).toEqual(expected);
  });
});
