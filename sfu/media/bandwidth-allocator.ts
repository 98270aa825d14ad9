/**
 * Caps one subscriber's simulcast layers by its available downlink bandwidth (the REMB estimate
 * its browser sends us). Tracks are served largest request first: each gets the highest of its
 * live layers, not above what it asked for, whose measured bitrate still fits in what is left;
 * when not even its lowest layer fits it keeps the lowest (never paused here).
 *
 * Hysteresis so a subscriber does not flap between layers: going down is immediate (the estimate
 * no longer covers the layer), going up needs `upHeadroom` times the layer's bitrate and, after a
 * step down, `upHoldMs` without another one. An estimate older than `staleMs` is forgotten and
 * nothing is capped. A layer whose bitrate is not measured yet (0) fits when the one below it does.
 *
 * Pure: time comes in as arguments. Lifecycle: one per subscriber transport; the transport
 * feeds `setEstimate` from REMB and calls `allocate` whenever the estimate or a request changes.
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
  /** Factor over a layer's bitrate the budget must reach before moving up to it (default 1.2). */
  upHeadroom?: number;
  /** No step up for this long after a step down (default 4 s). */
  upHoldMs?: number;
  /** An estimate older than this is ignored (default 10 s). */
  staleMs?: number;
}

export class BandwidthAllocator {
  private readonly upHeadroom: number;
  private readonly upHoldMs: number;
  private readonly staleMs: number;
  private estimate = 0;
  private estimateAt = Number.NEGATIVE_INFINITY;
  private readonly caps = new Map<string, number>();
  private readonly lastDown = new Map<string, number>();

  constructor(opts: BandwidthAllocatorOptions = {}) {
    this.upHeadroom = opts.upHeadroom ?? 1.2;
    this.upHoldMs = opts.upHoldMs ?? 4000;
    this.staleMs = opts.staleMs ?? 10_000;
  }

  /** Records the subscriber's available downlink bandwidth (bits/s). */
  setEstimate(bps: number, now: number): void {
    if (!Number.isFinite(bps) || bps < 0) return;
    this.estimate = bps;
    this.estimateAt = now;
  }

  /** The current estimate, undefined when none is known or it is stale. */
  estimateBps(now: number): number | undefined {
    return now - this.estimateAt <= this.staleMs ? this.estimate : undefined;
  }

  /**
   * The highest rank each track may receive (Infinity = no cap). `reservedBps` is spent before
   * video (audio). Tracks not passed are forgotten.
   */
  allocate(tracks: readonly AllocatorTrack[], reservedBps: number, now: number): Map<string, number> {
    const out = new Map<string, number>();
    const known = new Set(tracks.map((t) => t.id));
    for (const id of this.caps.keys()) {
      if (!known.has(id)) {
        this.caps.delete(id);
        this.lastDown.delete(id);
      }
    }
    const estimate = this.estimateBps(now);
    if (estimate === undefined) {
      this.caps.clear();
      for (const t of tracks) out.set(t.id, Number.POSITIVE_INFINITY);
      return out;
    }
    let budget = estimate - reservedBps;
    const order = tracks.toSorted((a, b) => b.requestedRank - a.requestedRank || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    for (const track of order) {
      const layers = track.layers.filter((l) => l.rank >= 1).toSorted((a, b) => a.rank - b.rank);
      if (layers.length === 0) {
        // Nothing to choose: it costs what it costs.
        for (const l of track.layers) budget -= l.bitrate;
        out.set(track.id, Number.POSITIVE_INFINITY);
        continue;
      }
      const allowed = layers.filter((l) => l.rank <= track.requestedRank);
      const candidates = allowed.length > 0 ? allowed : [layers[0]!];
      const previous = this.caps.get(track.id);
      const holding = now - (this.lastDown.get(track.id) ?? Number.NEGATIVE_INFINITY) < this.upHoldMs;
      let chosen = candidates[0]!;
      for (const layer of candidates) {
        const up = previous !== undefined && layer.rank > previous;
        const need = up ? layer.bitrate * this.upHeadroom : layer.bitrate;
        if (need > budget || (up && holding)) break;
        chosen = layer;
      }
      const limited = chosen !== candidates[candidates.length - 1];
      if (limited && previous !== undefined && chosen.rank < previous) this.lastDown.set(track.id, now);
      this.caps.set(track.id, chosen.rank);
      budget -= chosen.bitrate;
      out.set(track.id, chosen.rank);
    }
    return out;
  }
}
