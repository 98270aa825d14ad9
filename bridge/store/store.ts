/**
 * The bridge's state behind one interface: tracked call memberships per Matrix room, the
 * `m.room.member` state seen per user (for the token service's membership check), which SFU
 * room belongs to which Matrix room + slot (until the SFU room is deleted), pending SFU room
 * deletions, pending graced call leaves, the time of the latest leave applied per membership key
 * (so an older join re-sent later is not applied), and the appservice
 * transaction-deduplication records. Everything that is not state of a live call expires. Two implementations: in-memory (one process) and Redis
 * (shared by replicas). Every method is safe to call concurrently; callers that need ordering
 * (the membership tracker) serialise per room themselves.
 */

/** One device's presence in one call, as the bridge tracks it. */
export interface CallMembership {
  roomId: string;
  /** Unique inside the room: `state:<state_key>`, `sticky:<sender>:<sticky key>` or `legacy:<user>:<device>`. */
  key: string;
  source: 'session' | 'sticky' | 'legacy';
  userId: string;
  deviceId: string;
  /** `membershipID` (session) or `member.id` (sticky); '' when the client sent none. */
  memberId: string;
  /** The call slot, e.g. `m.call#ROOM`. */
  slotId: string;
  eventId: string;
  originServerTs: number;
  /** Epoch ms after which the membership counts as ended. */
  expiresAt: number;
}

export interface SfuRoomBinding {
  roomId: string;
  slotId: string;
}

export type TxnLockResult = 'acquired' | 'busy';

/** A plain `{}` call leave waiting for its grace (the same member's membership cancels it). */
export interface PendingLeave {
  roomId: string;
  key: string;
  userId: string;
  deviceId?: string;
  /** What `prev_content` told, for a membership the bridge did not track. */
  prev?: CallMembership;
  /** The leave event's origin_server_ts (epoch ms). */
  at: number;
  /** Epoch ms at which the leave takes effect (`at` + grace). */
  due: number;
}

export interface BridgeStore {
  listMemberships(roomId: string): Promise<CallMembership[]>;
  /** Matrix rooms with at least one tracked membership. */
  listCallRooms(): Promise<string[]>;
  putMembership(m: CallMembership): Promise<void>;
  /** Removes and returns the membership, if it was tracked. */
  removeMembership(roomId: string, key: string): Promise<CallMembership | undefined>;

  /** Records `m.room.member` membership (`join`, `leave`, `ban`, `invite`, `knock`). */
  setRoomMember(roomId: string, userId: string, membership: string): Promise<void>;
  getRoomMember(roomId: string, userId: string): Promise<string | undefined>;
  /** Every Matrix room the bridge has seen an event or state for. */
  listKnownRooms(): Promise<string[]>;
  addKnownRoom(roomId: string): Promise<void>;

  bindSfuRoom(name: string, binding: SfuRoomBinding): Promise<void>;
  lookupSfuRoom(name: string): Promise<SfuRoomBinding | undefined>;
  /** Forgets the binding once the SFU room is deleted. */
  unbindSfuRoom(name: string): Promise<void>;

  /** SFU rooms waiting for their grace period to end: name -> epoch ms of deletion. */
  setRoomDeleteAt(name: string, at: number): Promise<void>;
  clearRoomDeleteAt(name: string): Promise<void>;
  listRoomDeletions(): Promise<Map<string, number>>;

  /** Records (or replaces) the pending leave of one membership key. */
  setPendingLeave(p: PendingLeave): Promise<void>;
  /**
   * Removes and returns the pending leave of a key. Atomic: of several replicas taking the same
   * one, exactly one gets it, so only that one acts on it.
   */
  takePendingLeave(roomId: string, key: string): Promise<PendingLeave | undefined>;
  listPendingLeaves(): Promise<PendingLeave[]>;

  /** Remembers the origin_server_ts of the latest leave applied to a key, for `ttlMs`. */
  setLeftAt(roomId: string, key: string, at: number, ttlMs: number): Promise<void>;
  getLeftAt(roomId: string, key: string): Promise<number | undefined>;

  /** Whether a transaction with this dedupe key was fully processed (and not yet forgotten). */
  isTxnDone(key: string): Promise<boolean>;
  /** Remembers a processed transaction for `ttlMs` (atomic, first writer wins). */
  markTxnDone(key: string, ttlMs: number): Promise<void>;
  /**
   * A short lease so two replicas never process the same transaction at once. The lease belongs
   * to this store instance: only it renews or releases it, and a replica that dies stops
   * renewing, so its lease lapses after `ttlMs` and the homeserver's retry can be processed.
   */
  lockTxn(key: string, ttlMs: number): Promise<TxnLockResult>;
  /** Extends this instance's lease; false when it no longer holds it. */
  renewTxnLock(key: string, ttlMs: number): Promise<boolean>;
  unlockTxn(key: string): Promise<void>;

  close(): Promise<void>;
}
