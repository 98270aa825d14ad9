/**
 * The subscriber PC's two LiveKit data channels, `_reliable` (ordered) and `_lossy` (unordered,
 * no retransmits). Reliable data addressed to a participant whose channel is still opening
 * waits, in order and bounded, and is sent when it opens; lossy data is dropped then, as on a
 * congested link.
 *
 * A receiver that does not keep up must not grow the SFU: werift queues whatever is sent into
 * its SCTP association without bound, so each send first looks at the channel's
 * `bufferedAmount` (as LiveKit's DataChannelWriter does, pkg/sfu/datachannel): lossy data is
 * dropped once `MAX_BUFFERED_LOSSY` bytes wait (LiveKit: about 100 ms of the channel's rate, at
 * least 8 KiB), reliable data once `MAX_BUFFERED_RELIABLE` wait (LiveKit drops for a slow
 * reader too). Drops are counted (`onDrop`) and logged at most once per `DROP_LOG_INTERVAL_MS`
 * per channel, with the number dropped since.
 */
import type { RTCDataChannel, RTCPeerConnection } from 'werift';
import type { Logger } from '../../common/logger.ts';
import type { DataChannelKind } from '../rtc/types.ts';

/** Reliable data packets kept per participant until its `_reliable` channel opens. */
const MAX_PENDING_RELIABLE = 256;
/** Lossy data is dropped while more than this waits in the subscriber's channel. */
export const MAX_BUFFERED_LOSSY = 64 * 1024;
/** Reliable data is dropped while more than this waits (the receiver is not reading). */
export const MAX_BUFFERED_RELIABLE = 1024 * 1024;
const DROP_LOG_INTERVAL_MS = 10_000;

export type DataDropReason = 'not_open' | 'backlog';

export interface SubscriberDataChannelsDeps {
  log: Logger;
  /** Wall-clock ms for rate-limiting the drop log. */
  now: () => number;
  /** Called for each packet dropped (a counter). */
  onDrop?: (kind: DataChannelKind, reason: DataDropReason) => void;
}

export class SubscriberDataChannels {
  private readonly channels = new Map<DataChannelKind, RTCDataChannel>();
  private readonly pendingReliable: Buffer[] = [];
  private readonly deps: SubscriberDataChannelsDeps;
  private readonly lastLogAt = new Map<DataChannelKind, number>();
  private readonly droppedSinceLog = new Map<DataChannelKind, number>();

  constructor(deps: SubscriberDataChannelsDeps) {
    this.deps = deps;
  }

  /** Creates both channels on `pc` (before its first offer). */
  open(pc: RTCPeerConnection): void {
    const reliable = pc.createDataChannel('_reliable', { ordered: true });
    reliable.stateChanged.subscribe((state) => {
      if (state !== 'open') return;
      for (const data of this.pendingReliable.splice(0)) this.trySend('reliable', reliable, data);
    });
    this.channels.set('reliable', reliable);
    this.channels.set('lossy', pc.createDataChannel('_lossy', { ordered: false, maxRetransmits: 0 }));
  }

  send(kind: DataChannelKind, bytes: Uint8Array): void {
    const channel = this.channels.get(kind);
    if (!channel) return;
    const data = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (channel.readyState === 'open') {
      this.trySend(kind, channel, data);
      return;
    }
    if (kind !== 'reliable' || channel.readyState !== 'connecting') return;
    if (this.pendingReliable.length < MAX_PENDING_RELIABLE) this.pendingReliable.push(Buffer.from(data));
    else this.dropped(kind, 'not_open');
  }

  private trySend(kind: DataChannelKind, channel: RTCDataChannel, data: Buffer): void {
    const limit = kind === 'lossy' ? MAX_BUFFERED_LOSSY : MAX_BUFFERED_RELIABLE;
    if (channel.bufferedAmount > limit) {
      this.dropped(kind, 'backlog');
      return;
    }
    try {
      channel.send(data);
    } catch (err) {
      this.deps.log.debug({ err }, 'data channel send failed');
    }
  }

  private dropped(kind: DataChannelKind, reason: DataDropReason): void {
    this.deps.onDrop?.(kind, reason);
    const now = this.deps.now();
    const last = this.lastLogAt.get(kind);
    if (last !== undefined && now - last < DROP_LOG_INTERVAL_MS) {
      this.droppedSinceLog.set(kind, (this.droppedSinceLog.get(kind) ?? 0) + 1);
      return;
    }
    const since = this.droppedSinceLog.get(kind) ?? 0;
    this.lastLogAt.set(kind, now);
    this.droppedSinceLog.set(kind, 0);
    this.deps.log.info(
      { kind, reason, droppedSinceLastLog: since },
      reason === 'not_open'
        ? "data dropped: the participant's data channel has not opened"
        : 'data dropped: the participant is not reading its data channel fast enough',
    );
  }
}
