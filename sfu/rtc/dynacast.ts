/**
 * Dynacast for one published video track: tells the publisher (SubscribedQualityUpdate) which
 * simulcast qualities anybody receives, so its encoder stops the others. Raising takes effect
 * at once (a subscriber is waiting for it); lowering waits `DYNACAST_DOWN_DELAY_MS` so a
 * window resized back and forth does not make the publisher stop and restart a layer (each
 * restart costs a keyframe). Nobody subscribed = every quality off.
 *
 * Lifecycle: made by the publisher's Participant per video track; `update()` from the Room
 * whenever a subscription or its settings change; `close()` on unpublish (cancels the timer).
 */
import type { VideoQuality } from '@livekit/protocol';
import type { Clock, TimerHandle } from '../../common/clock.ts';

export const DYNACAST_DOWN_DELAY_MS = 3000;

const rank = (q: VideoQuality | undefined): number => (q === undefined ? -1 : q);

export class DynacastState {
  private readonly clock: Clock;
  private readonly send: (maxWanted: VideoQuality | undefined) => void;
  /** What the publisher was last told; null = nothing sent yet. */
  private sent: VideoQuality | undefined | null = null;
  private latest: VideoQuality | undefined;
  private timer: TimerHandle | undefined;
  private closed = false;

  constructor(deps: { clock: Clock; send: (maxWanted: VideoQuality | undefined) => void }) {
    this.clock = deps.clock;
    this.send = deps.send;
  }

  /** The highest quality any subscriber wants now (undefined: none). */
  update(maxWanted: VideoQuality | undefined): void {
    if (this.closed) return;
    this.latest = maxWanted;
    if (this.sent !== null && rank(maxWanted) === rank(this.sent)) {
      this.cancel();
      return;
    }
    if (this.sent === null || rank(maxWanted) > rank(this.sent)) {
      this.cancel();
      this.emit(maxWanted);
      return;
    }
    if (this.timer === undefined) {
      this.timer = this.clock.setTimeout(() => {
        this.timer = undefined;
        if (!this.closed && rank(this.latest) !== rank(this.sent ?? undefined)) this.emit(this.latest);
      }, DYNACAST_DOWN_DELAY_MS);
    }
  }

  private emit(maxWanted: VideoQuality | undefined): void {
    this.sent = maxWanted;
    this.send(maxWanted);
  }

  private cancel(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  close(): void {
    this.closed = true;
    this.cancel();
  }
}
