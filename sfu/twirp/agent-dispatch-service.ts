/**
 * The AgentDispatchService methods (livekit_agent_dispatch.proto; LiveKit
 * pkg/service/agent_dispatch_service.go): CreateDispatch, DeleteDispatch and ListDispatch, each
 * needing `roomAdmin` for the request's room as RoomService's room methods do, mapped onto the
 * agent dispatcher (sfu/agent/dispatcher.ts). Served by the same Twirp router as RoomService.
 */
import {
  CreateAgentDispatchRequest,
  DeleteAgentDispatchRequest,
  ListAgentDispatchRequest,
  ListAgentDispatchResponse,
} from '@livekit/protocol';
import type { AgentDispatchBackend } from '../agent/dispatcher.ts';
import { ensureAdminPermission, type ApiGrants } from './auth.ts';
import { invalidArgument } from './errors.ts';
import { define, type MethodSpec } from './room-service.ts';

const admin = (grants: ApiGrants, req: { room: string }) => ensureAdminPermission(grants, req.room);

const required = (name: string, value: string) => {
  if (!value) throw invalidArgument(name, 'is required');
};

export const AGENT_DISPATCH_METHODS: Readonly<Record<string, MethodSpec<AgentDispatchBackend>>> = {
  CreateDispatch: define<CreateAgentDispatchRequest, AgentDispatchBackend>({
    request: CreateAgentDispatchRequest,
    authorize: admin,
    async handle(backend, req) {
      required('room', req.room);
      return await backend.createDispatch({ room: req.room, agentName: req.agentName, metadata: req.metadata });
    },
  }),
  DeleteDispatch: define<DeleteAgentDispatchRequest, AgentDispatchBackend>({
    request: DeleteAgentDispatchRequest,
    authorize: admin,
    async handle(backend, req) {
      required('room', req.room);
      return await backend.deleteDispatch(req.room, req.dispatchId);
    },
  }),
  ListDispatch: define<ListAgentDispatchRequest, AgentDispatchBackend>({
    request: ListAgentDispatchRequest,
    authorize: admin,
    async handle(backend, req) {
      required('room', req.room);
      return new ListAgentDispatchResponse({ agentDispatches: await backend.listDispatch(req.room, req.dispatchId) });
    },
  }),
};
