/**
 * The routing contract: which node owns a room, and what every node tells the others about
 * itself. `Router` has two implementations chosen once at start-up (sfu/routing/cluster.ts):
 * the local one (no `redis`: every room is here) and the Redis one (sfu/routing/redis-router.ts,
 * after livekit/livekit pkg/routing/redisrouter.go). Nothing in here knows about sockets.
 */

/** What a node reports about itself each heartbeat (LiveKit's livekit.Node + NodeStats, trimmed). */
export interface NodeInfo {
  id: string;
  region: string;
  /** `serving` takes new rooms; `draining` keeps its calls only until they have moved. */
  state: 'serving' | 'draining';
  /** Base URL of the node's HTTP listener (signalling relay and node-local RoomService). */
  signalUrl: string;
  /** Where its media is: rtc.node_ip and the UDP range (reported for operators; clients learn it from the JoinResponse). */
  nodeIp: string;
  portRange: [number, number];
  startedAt: number;
  /** Injected-clock ms of the last heartbeat. */
  updatedAt: number;
  stats: NodeStats;
}

export interface NodeStats {
  /** Fraction of the machine's CPU this process used (0..1, LiveKit's CpuLoad). */
  cpuLoad: number;
  /** 1-minute load average / CPUs (LiveKit's sysload). */
  sysload: number;
  numCpus: number;
  bytesPerSec: number;
  packetsPerSec: number;
  rooms: number;
  participants: number;
  tracks: number;
}

/** Where a room's signalling goes. */
export type Placement = { kind: 'local' } | { kind: 'remote'; node: NodeInfo };

export interface Router {
  readonly nodeId: string;
  /** False for the local router: no relay, no cluster-wide fan-out. */
  readonly clustered: boolean;
  /**
   * The node that hosts `room`, placing it (node selector, atomic claim) when nobody does and
   * `create` is set. Never throws for Redis trouble: it answers `local` and counts the fallback.
   * `undefined` when the room is placed nowhere and `create` is false.
   */
  placeRoom(room: string, create: boolean): Promise<Placement | undefined>;
  /** The live nodes, this one included (for ListRooms fan-out). */
  liveNodes(): Promise<NodeInfo[]>;
  /**
   * A node did not take a TCP connection on its signalling address: it is gone (a node that
   * lives listens). The Redis router reaps it at once instead of waiting for its heartbeat to age.
   */
  reportUnreachable(nodeId: string): Promise<void>;
  /** A room of this node closed: it leaves the map. */
  roomClosed(room: string): void;
  /** The last registry read says this node is dead (relays to it end). */
  isKnownDead(nodeId: string): boolean;
  /** Stop taking new rooms and give up the rooms of this node in the map (draining). */
  drain(): Promise<void>;
  readonly draining: boolean;
  /** Registers the node under `selfUrl` (its HTTP listener as the others reach it). */
  start(selfUrl: string): Promise<void>;
  stop(): Promise<void>;
}
