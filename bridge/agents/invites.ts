/**
 * Agents in Matrix calls (opt-in): keeps each call's SFU room dispatched with exactly the agents
 * its Matrix room asks for (bridge/agents/request.ts) while the call has members, through the
 * SFU's AgentDispatchService. It holds no state of its own: what a room wants is its current
 * state (read from the homeserver), what it has is the bridge's dispatches the SFU lists, so a
 * restarted or sibling bridge converges the same way. A room is re-synced when a member joins
 * its call and when a transaction carries an agent request, a power-levels change or a
 * redaction for it; when a call's last membership ends, the bridge's dispatches for its SFU
 * room are deleted (the SFU then ends the agent's job and the agent leaves). Built by
 * `createAgentInvites(deps)`; the appservice feeds it transactions (`applyEvents`, after the
 * membership tracker) and chains it after the room lifecycle as a membership listener
 * (`withAgents`). Failures are logged and never thrown back at the homeserver.
 */
import type { Logger } from '../../common/logger.ts';
import { HomeserverError, type AppserviceClient } from '../homeserver/client.ts';
import { sfuRoomOf } from '../lifecycle/lifecycle.ts';
import type { MembershipEnded, MembershipListener } from '../membership/tracker.ts';
import type { BridgeStore, CallMembership } from '../store/store.ts';
import type { AgentDispatchService } from './dispatch-client.ts';
import { activeRequests, touchesAgentRequests, type AgentPolicy } from './request.ts';

export interface AgentInvitesDeps {
  policy: AgentPolicy;
  store: Pick<BridgeStore, 'listMemberships'>;
  homeserver: Pick<AppserviceClient, 'roomState'>;
  /** Our homeserver's name: room state is read as a local call member when the bot is not joined. */
  serverName: string;
  dispatches: AgentDispatchService;
  /** The tracker's per-room queue, so a sync never races a join or leave of the same room. */
  inRoom<T>(roomId: string, fn: () => Promise<T>): Promise<T>;
  logger: Logger;
}

/** Only the joins and leaves matter here; everything else a listener hears goes to the lifecycle alone. */
export interface AgentInvites extends Pick<MembershipListener, 'joined' | 'left'> {
  /** A transaction's events (after the tracker applied them). */
  applyEvents(events: unknown[]): Promise<void>;
  /** Brings the calls of a Matrix room in line with its requests (call inside the room's queue). */
  sync(roomId: string): Promise<void>;
}

export function createAgentInvites(deps: AgentInvitesDeps): AgentInvites {
  const log = deps.logger.child({ component: 'agents' });

  async function removeAll(sfuRoom: string, why: string): Promise<void> {
    for (const d of await deps.dispatches.listOurs(sfuRoom)) {
      await deps.dispatches.delete(sfuRoom, d.id);
      log.info({ sfuRoom, agentName: d.agentName, why }, 'agent dispatch removed');
    }
  }

  /** Room state as the bot, else (403) as a local member of the call, as reconcile reads it. */
  async function readState(roomId: string, members: readonly CallMembership[]): Promise<unknown[]> {
    try {
      return await deps.homeserver.roomState(roomId);
    } catch (err) {
      const local = members.find((m) => m.userId.endsWith(`:${deps.serverName}`));
      if (!(err instanceof HomeserverError) || err.status !== 403 || !local) throw err;
      return await deps.homeserver.roomState(roomId, local.userId);
    }
  }

  async function sync(roomId: string): Promise<void> {
    const members = await deps.store.listMemberships(roomId);
    const calls = new Set(members.map((m) => sfuRoomOf(m)));
    if (calls.size === 0) return;
    const requests = activeRequests(await readState(roomId, members), deps.policy);
    for (const sfuRoom of calls) {
      const wanted = requests.filter((r) => sfuRoomOf({ roomId, slotId: r.slotId }) === sfuRoom);
      const have = await deps.dispatches.listOurs(sfuRoom);
      for (const d of have) {
        if (wanted.some((r) => r.agentName === d.agentName)) continue;
        await deps.dispatches.delete(sfuRoom, d.id);
        log.info({ sfuRoom, agentName: d.agentName }, 'agent request withdrawn: dispatch removed');
      }
      for (const r of wanted) {
        if (have.some((d) => d.agentName === r.agentName)) continue;
        const id = await deps.dispatches.create(sfuRoom, r.agentName, { matrixRoomId: roomId, requestedBy: r.sender });
        log.info({ sfuRoom, agentName: r.agentName, dispatchId: id, requestedBy: r.sender }, 'agent dispatched into the call');
      }
    }
  }

  const guarded = async (what: string, roomId: string, fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (err) {
      log.error({ err: (err as Error).message, roomId, what }, 'agent dispatch sync failed');
    }
  };

  return {
    sync,
    async applyEvents(events) {
      const rooms = new Set<string>();
      for (const e of events) {
        if (!e || typeof e !== 'object') continue;
        const { type, room_id: roomId } = e as { type?: unknown; room_id?: unknown };
        if (typeof roomId === 'string' && touchesAgentRequests(type)) rooms.add(roomId);
      }
      for (const roomId of rooms) await guarded('event', roomId, () => deps.inRoom(roomId, () => sync(roomId)));
    },
    async joined(m: CallMembership) {
      await guarded('join', m.roomId, () => sync(m.roomId));
    },
    async left(e: MembershipEnded) {
      const slotId = e.membership?.slotId;
      const sfuRoom = sfuRoomOf({ roomId: e.roomId, ...(slotId ? { slotId } : {}) });
      await guarded('leave', e.roomId, async () => {
        const remaining = await deps.store.listMemberships(e.roomId);
        if (!remaining.some((r) => sfuRoomOf(r) === sfuRoom)) await removeAll(sfuRoom, 'the call ended');
      });
    },
  };
}

/**
 * The room lifecycle first, then the agents, for joins and leaves; every other listener method
 * is the lifecycle's own (delegated, so one added to the listener contract reaches it unchanged).
 * An agents failure never hides the lifecycle's.
 */
export function withAgents<L extends MembershipListener>(lifecycle: L, agents: AgentInvites | undefined): L {
  if (!agents) return lifecycle;
  const chained = Object.create(lifecycle) as L;
  chained.joined = async (m) => {
    try {
      await lifecycle.joined(m);
    } finally {
      await agents.joined(m);
    }
  };
  chained.left = async (e) => {
    try {
      await lifecycle.left(e);
    } finally {
      await agents.left(e);
    }
  };
  return chained;
}
