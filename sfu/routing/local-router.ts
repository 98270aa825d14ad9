/**
 * The router of a single node (no `redis` configured): every room is here, there are no other
 * nodes, nothing is relayed. This is the SFU exactly as it was before the cluster existed.
 */
import type { NodeInfo, Router } from './types.ts';

export function createLocalRouter(nodeId: string, self: () => NodeInfo): Router {
  return {
    nodeId,
    clustered: false,
    draining: false,
    placeRoom: async () => ({ kind: 'local' }),
    liveNodes: async () => [self()],
    reportUnreachable: async () => undefined,
    roomClosed: () => undefined,
    isKnownDead: () => false,
    drain: async () => undefined,
    start: async () => undefined,
    stop: async () => undefined,
  };
}
