/**
 * Metrics of the cluster layer (sfu/routing): Redis reachability, live nodes, placements that
 * fell back to this node, nodes declared dead, relayed signalling sessions. Project prefix, no
 * per-room or per-node labels.
 */
import { Counter, Gauge, type Registry } from 'prom-client';

export interface ClusterMetrics {
  redisUp(up: boolean): void;
  nodes(n: number): void;
  localFallback(): void;
  nodeDeclaredDead(): void;
  roomMoved(): void;
  relays(delta: number): void;
  relayEnded(reason: 'client' | 'host_closed' | 'host_lost' | 'drain'): void;
}

export function createClusterMetrics(registry: Registry): ClusterMetrics {
  const registers = [registry];
  const up = new Gauge({ name: 'matrixrtc_sfu_cluster_redis_up', help: '1 while the cluster Redis answers, 0 while rooms are placed on this node only', registers });
  const nodes = new Gauge({ name: 'matrixrtc_sfu_cluster_nodes', help: 'Live SFU nodes in the registry, this one included', registers });
  const fallbacks = new Counter({
    name: 'matrixrtc_sfu_cluster_local_fallbacks_total',
    help: 'Rooms placed on this node because Redis did not answer',
    registers,
  });
  const deadNodes = new Counter({ name: 'matrixrtc_sfu_cluster_nodes_declared_dead_total', help: 'Nodes this node declared dead (heartbeat aged or address refusing)', registers });
  const moved = new Counter({ name: 'matrixrtc_sfu_cluster_rooms_moved_total', help: 'Rooms whose participants were asked to reconnect because another node owns the room', registers });
  const relays = new Gauge({ name: 'matrixrtc_sfu_cluster_relayed_sessions', help: 'Signalling sessions this node relays to the node hosting their room', registers });
  const ended = new Counter({
    name: 'matrixrtc_sfu_cluster_relay_ended_total',
    help: 'Relayed signalling sessions that ended, by why',
    labelNames: ['reason'],
    registers,
  });
  return {
    redisUp: (v) => up.set(v ? 1 : 0),
    nodes: (n) => nodes.set(n),
    localFallback: () => fallbacks.inc(),
    nodeDeclaredDead: () => deadNodes.inc(),
    roomMoved: () => moved.inc(),
    relays: (d) => relays.inc(d),
    relayEnded: (reason) => ended.inc({ reason }),
  };
}
