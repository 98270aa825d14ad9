/**
 * Caps one subscriber's simulcast layers by its downlink bandwidth, as its browser reports it in
 * REMB (libwebrtc's receive-side estimator).
 *
 * That estimate says little about how much more the link could carry: it grows from what the
 * receiver gets (about 8 % a second, and never above ~1.5 × the incoming rate), so after a
 * subscriber shrank a tile and received only the low layer, the estimate is low for many
 * seconds although the link is fine. What it does say reliably is congestion: on overuse the
 * estimator drops its estimate below what it receives. So a cap is set only on that signal, an
 * estimate that went down and is now below what we send (`congestionFactor`); then each track gets
 * the highest of its live layers, not above its request, that fits the estimate (largest request
 * first, audio reserved first, the lowest layer when nothing fits, never paused here), and the
 * caps hold for `upHoldMs`. While they hold, a rising estimate allows a layer up only with
 * `upHeadroom`. When the hold is over the caps are lifted and every track gets what its settings
 * ask for; if that congests the link again soon (`probeFailMs`), the next hold is twice as long
 * (up to `maxHoldMs`), so a truly narrow link is retried ever more rarely. A subscriber asking
 * for a larger layer (a tile grown back) is therefore served at once unless its link recently
 * signalled congestion.
 *
 * An estimate older than `staleMs` is forgotten and nothing is capped. A layer whose bitrate is
 * not measured yet (0) fits when the one below it does. Pure: time comes in as arguments.
 * Lifecycle: one per subscriber transport; the transport feeds `setEstimate` from REMB and calls
 * `allocate` whenever the estimate or a request changes.
 */

export interface AllocatorLayer {
  /** 1 q, 2 h, 3 f; 0 = the only layer of a non-simulcast track. */
  readonly rank: number;
  /** Measured bits per second (0 = not measured yet). */
  readonly bitrate: number;
}

export interface AllocatorTrack {
  readonly id: string;
  /** Highest rank the subscriber's settings allow (Infinity = best available). */
  readonly requestedRank: number;
  /** The track's live layers. */
  readonly layers: readonly AllocatorLayer[];
}

export interface BandwidthAllocatorOptions {
  /** Factor over a layer's bitrate a rising estimate must reach to move up during a hold (default 1.2). */
  upHeadroom?: number;
  /** How long caps hold after congestion (default 4 s); doubled after each failed return. */
  upHoldMs?: number;
  /** Longest hold after repeated congestion (default 32 s). */
  maxHoldMs?: number;
  /** A decreased estimate below this fraction of what we send is congestion (default 0.9). */
  congestionFactor?: number;
  /** Congestion this soon after a layer went up makes that step a failure (default 5 s). */
  probeFailMs?: number;
  /** An estimate older than this is ignored (default 10 s). */
  staleMs?: number;
}

export class BandwidthAllocator {
  private readonly upHeadroom: number;
  private readonly upHoldMs: number;
  private readonly maxHoldMs: number;
  private readonly congestionFactor: number;
  private readonly probeFailMs: number;
  private readonly staleMs: number;
  private estimate = 0;
  private estimateAt = Number.NEGATIVE_INFINITY;
  /** Bits/s the last allocation forwards (reserved plus the layers chosen). */
  private sending = 0;
  private holdMs: number;
  private holdUntil = Number.NEGATIVE_INFINITY;
  private lastUp = Number.NEGATIVE_INFINITY;
  /** Rank each track got in the last allocation. */
  private readonly ranks = new Map<string, number>();

  constructor(opts: BandwidthAllocatorOptions = {}) {
    this.upHeadroom = opts.upHeadroom ?? 1.2;
    this.upHoldMs = opts.upHoldMs ?? 4000;
    this.maxHoldMs = opts.maxHoldMs ?? 32_000;
    this.congestionFactor = opts.congestionFactor ?? 0.9;
    this.probeFailMs = opts.probeFailMs ?? 5000;
    this.staleMs = opts.staleMs ?? 10_000;
    this.holdMs = this.upHoldMs;
  }

  /**
   * Records the subscriber's available downlink bandwidth (bits/s). Zero means "no estimate yet"
   * (Chrome's first REMB can carry 0) and is ignored.
   */
  setEstimate(bps: number, now: number): void {
    if (!Number.isFinite(bps) || bps <= 0) return;
    const previous = this.estimateBps(now);
    this.estimate = bps;
    this.estimateAt = now;
    const decreased = previous === undefined || bps < previous;
    if (decreased && bps < this.congestionFactor * this.sending) {
      this.holdMs = now - this.lastUp < this.probeFailMs ? Math.min(this.maxHoldMs, this.holdMs * 2) : this.upHoldMs;
      this.holdUntil = now + this.holdMs;
    }
  }

  /** The current estimate, undefined when none is known or it is stale. */
  estimateBps(now: number): number | undefined {
    return now - this.estimateAt <= this.staleMs ? this.estimate : undefined;
  }

  /** Whether caps are in force (congestion was signalled and its hold is not over). */
  capping(now: number): boolean {
    return this.estimateBps(now) !== undefined && now < this.holdUntil;
  }

  /**
   * The highest rank each track may receive (Infinity = no cap). `reservedBps` is spent before
   * video (audio). Tracks not passed are forgotten.
   */
  allocate(tracks: readonly AllocatorTrack[], reservedBps: number, now: number): Map<string, number> {
    const out = new Map<string, number>();
    const known = new Set(tracks.map((t) => t.id));
    for (const id of this.ranks.keys()) if (!known.has(id)) this.ranks.delete(id);
    const capping = this.capping(now);
    let budget = capping ? this.estimate - reservedBps : Number.POSITIVE_INFINITY;
    let sending = reservedBps;
    const order = tracks.toSorted((a, b) => b.requestedRank - a.requestedRank || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    for (const track of order) {
      const layers = track.layers.filter((l) => l.rank >= 1).toSorted((a, b) => a.rank - b.rank);
      if (layers.length === 0) {
        // Nothing to choose: it costs what it costs.
        for (const l of track.layers) {
          budget -= l.bitrate;
          sending += l.bitrate;
        }
        out.set(track.id, Number.POSITIVE_INFINITY);
        continue;
      }
      const allowed = layers.filter((l) => l.rank <= track.requestedRank);
      const candidates = allowed.length > 0 ? allowed : [layers[0]!];
      const previous = this.ranks.get(track.id);
      let chosen = candidates[0]!;
      for (const layer of candidates) {
        const up = previous !== undefined && layer.rank > previous;
        if ((up ? layer.bitrate * this.upHeadroom : layer.bitrate) > budget) break;
        chosen = layer;
      }
      if (previous !== undefined && chosen.rank > previous) this.lastUp = now;
      this.ranks.set(track.id, chosen.rank);
      budget -= chosen.bitrate;
      sending += chosen.bitrate;
      out.set(track.id, capping ? chosen.rank : Number.POSITIVE_INFINITY);
    }
    this.sending = sending;
    return out;
  }
}
