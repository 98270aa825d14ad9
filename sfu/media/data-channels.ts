/**
 * The subscriber PC's two LiveKit data channels, `_reliable` (ordered) and `_lossy` (unordered,
 * no retransmits). Reliable data addressed to a participant whose channel is still opening
 * waits, in order and bounded, and is sent when it opens; lossy data is dropped then, as on a
 * congested link.
 */
import type { RTCDataChannel, RTCPeerConnection } from 'werift';
import type { Logger } from '../../common/logger.ts';
import type { DataChannelKind } from '../rtc/types.ts';

/** Reliable data packets kept per participant until its `_reliable` channel opens. */
const MAX_PENDING_RELIABLE = 256;

export class SubscriberDataChannels {
  private readonly channels = new Map<DataChannelKind, RTCDataChannel>();
  private readonly pendingReliable: Buffer[] = [];
  private readonly log: Logger;

  constructor(log: Logger) {
    this.log = log;
  }

  /** Creates both channels on `pc` (before its first offer). */
  open(pc: RTCPeerConnection): void {
    const reliable = pc.createDataChannel('_reliable', { ordered: true });
    reliable.stateChanged.subscribe((state) => {
      if (state !== 'open') return;
      for (const data of this.pendingReliable.splice(0)) this.trySend(reliable, data);
    });
    this.channels.set('reliable', reliable);
    this.channels.set('lossy', pc.createDataChannel('_lossy', { ordered: false, maxRetransmits: 0 }));
  }

  send(kind: DataChannelKind, bytes: Uint8Array): void {
    const channel = this.channels.get(kind);
    if (!channel) return;
    const data = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (channel.readyState === 'open') {
      this.trySend(channel, data);
      return;
    }
    if (kind !== 'reliable' || channel.readyState !== 'connecting') return;
    if (this.pendingReliable.length < MAX_PENDING_RELIABLE) this.pendingReliable.push(Buffer.from(data));
    else this.log.warn("reliable data dropped: the participant's data channel has not opened");
  }

  private trySend(channel: RTCDataChannel, data: Buffer): void {
    try {
      channel.send(data);
    } catch (err) {
      this.log.debug({ err }, 'data channel send failed');
    }
  }
}
