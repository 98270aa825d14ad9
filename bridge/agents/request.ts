/**
 * How a Matrix room asks for a LiveKit agent in its call, read from room state: the state event
 * `io.github.matrix_rtc_backend.agent` whose state key is the agent's name and whose content is
 * `{"active": true}` (optionally `"slot_id"`, default the room call `m.call#ROOM`). Empty or
 * redacted content (`{}`) withdraws it. A request counts when the agent is on the bridge's
 * allow-list and the sender of the current state event has at least the configured power level
 * in the room, computed as Synapse does (`users[sender]`, else `users_default`, else 0; without
 * a power-levels event the room creator has 100). Pure functions over the state array the
 * client-server API's `/rooms/{roomId}/state` returns.
 */
import { LEGACY_SLOT_ID } from '../token/names.ts';

export const AGENT_REQUEST_EVENT = 'io.github.matrix_rtc_backend.agent';

export interface AgentPolicy {
  /** Agent names members may invite; empty = the feature is off. */
  allowed: readonly string[];
  /** Power level the requesting member needs in the room. */
  invitePowerLevel: number;
}

export interface AgentRequest {
  agentName: string;
  slotId: string;
  sender: string;
  eventId: string;
}

interface StateEvent {
  type: string;
  state_key: string;
  sender: string;
  event_id: string;
  content: Record<string, unknown>;
}

function asStateEvent(raw: unknown): StateEvent | undefined {
  if (!raw || typeof raw !== 'object') return undefined;
  const e = raw as Record<string, unknown>;
  if (typeof e.type !== 'string' || typeof e.state_key !== 'string' || typeof e.sender !== 'string') return undefined;
  const content = e.content && typeof e.content === 'object' && !Array.isArray(e.content) ? (e.content as Record<string, unknown>) : {};
  return { type: e.type, state_key: e.state_key, sender: e.sender, event_id: typeof e.event_id === 'string' ? e.event_id : '', content };
}

/** Synapse's get_user_power_level over a room's current state. */
export function powerLevelOf(state: readonly unknown[], userId: string): number {
  const events = state.map(asStateEvent).filter((e): e is StateEvent => e !== undefined);
  const pl = events.find((e) => e.type === 'm.room.power_levels' && e.state_key === '');
  if (!pl) {
    const create = events.find((e) => e.type === 'm.room.create' && e.state_key === '');
    return create && create.sender === userId ? 100 : 0;
  }
  const users = pl.content.users && typeof pl.content.users === 'object' ? (pl.content.users as Record<string, unknown>) : {};
  const own = users[userId];
  if (typeof own === 'number' && Number.isInteger(own)) return own;
  const dflt = pl.content.users_default;
  return typeof dflt === 'number' && Number.isInteger(dflt) ? dflt : 0;
}

/** Whether an event can change what agents a room asks for (so its calls need a re-sync). */
export function touchesAgentRequests(type: unknown): boolean {
  return type === AGENT_REQUEST_EVENT || type === 'm.room.power_levels' || type === 'm.room.redaction';
}

/** The requests in `state` that count under `policy`, each agent once. */
export function activeRequests(state: readonly unknown[], policy: AgentPolicy): AgentRequest[] {
  const out: AgentRequest[] = [];
  for (const raw of state) {
    const e = asStateEvent(raw);
    if (!e || e.type !== AGENT_REQUEST_EVENT || e.content.active !== true) continue;
    if (!policy.allowed.includes(e.state_key)) continue;
    if (powerLevelOf(state, e.sender) < policy.invitePowerLevel) continue;
    const slotId = typeof e.content.slot_id === 'string' && e.content.slot_id ? e.content.slot_id : LEGACY_SLOT_ID;
    out.push({ agentName: e.state_key, slotId, sender: e.sender, eventId: e.event_id });
  }
  return out;
}
