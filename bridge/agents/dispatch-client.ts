/**
 * The bridge's client of the SFU's AgentDispatchService (livekit-server-sdk's
 * AgentDispatchClient), so it drives our SFU and a LiveKit server the same way. Dispatches the
 * bridge made carry JSON metadata naming the Matrix room and the requester; `listOurs` returns
 * only those, so other dispatches of the room (the SFU's automatic one, an operator's) are never
 * touched. A room or dispatch that is gone is a result, not an error.
 */
import { AgentDispatchClient } from 'livekit-server-sdk';

/** Marks the bridge's own dispatches in their metadata. */
export const DISPATCH_SOURCE = 'matrix-rtc-backend';

export interface BridgeDispatch {
  id: string;
  agentName: string;
  matrixRoomId: string;
  requestedBy: string;
}

export interface AgentDispatchService {
  /** The bridge's dispatches in an SFU room (none when the room does not exist). */
  listOurs(sfuRoom: string): Promise<BridgeDispatch[]>;
  create(sfuRoom: string, agentName: string, meta: { matrixRoomId: string; requestedBy: string }): Promise<string>;
  delete(sfuRoom: string, dispatchId: string): Promise<void>;
}

const isNotFound = (err: unknown) => (err as { code?: unknown }).code === 'not_found' || (err as { status?: unknown }).status === 404;

export function createAgentDispatchService(opts: { url: string; key: string; secret: string }): AgentDispatchService {
  const client = new AgentDispatchClient(opts.url, opts.key, opts.secret);
  return {
    async listOurs(sfuRoom) {
      let all;
      try {
        all = await client.listDispatch(sfuRoom);
      } catch (err) {
        if (isNotFound(err)) return [];
        throw err;
      }
      const out: BridgeDispatch[] = [];
      for (const d of all) {
        let meta: Record<string, unknown> | undefined;
        try {
          meta = JSON.parse(d.metadata) as Record<string, unknown>;
        } catch {
          continue;
        }
        if (meta?.source !== DISPATCH_SOURCE) continue;
        out.push({ id: d.id, agentName: d.agentName, matrixRoomId: String(meta.matrix_room_id ?? ''), requestedBy: String(meta.requested_by ?? '') });
      }
      return out;
    },
    async create(sfuRoom, agentName, meta) {
      const metadata = JSON.stringify({ source: DISPATCH_SOURCE, matrix_room_id: meta.matrixRoomId, requested_by: meta.requestedBy });
      return (await client.createDispatch(sfuRoom, agentName, { metadata })).id;
    },
    async delete(sfuRoom, dispatchId) {
      try {
        await client.deleteDispatch(dispatchId, sfuRoom);
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    },
  };
}
