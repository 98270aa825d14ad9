/**
 * Caps one subscriber's simulcast layers by its available downlink bandwidth (the REMB estimate
 * its browser sends us). Tracks are served largest request first: each gets the highest of its
 * live layers, not above what it asked for, whose measured bitrate still fits in what is left;
 * when not even its lowest layer fits it keeps the lowest (never paused here).
 *
 * Hysteresis so a subscriber does not flap between layers: going down is immediate (the estimate
 * no longer covers the layer), going up needs `upHeadroom` times the layer's bitrate and, after a
 * step down, a hold time without another one. An estimate older than `staleMs` is forgotten and
 * nothing is capped. A layer whose bitrate is not measured yet (0) fits when the one below it does.
 *
 * Probing: a receive-side estimator (REMB) never reports much more than it receives (libwebrtc
 * caps it near 1.5 × the incoming rate), so once capped to a low layer the estimate alone would
 * never allow the higher one again. When the estimate is at least `appLimitedFactor` × what we
 * send (the estimate is limited by us, not by the network), one track per allocation may try the
 * next layer up after its hold time (and as long after its last try); a step down soon after such a try doubles that track's hold
 * time (up to `maxHoldMs`), so a truly narrow link is tried ever more rarely.
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
  /** No step up for this long after a step down (default 4 s); doubled after each failed try. */
  upHoldMs?: number;
  /** Longest hold after repeated failed tries (default 32 s). */
  maxHoldMs?: number;
  /** Estimate ÷ sending rate from which the estimate counts as limited by us (default 1.3). */
  appLimitedFactor?: number;
  /** A step down this soon after a try up makes the try a failure (default 5 s). */
  probeFailMs?: number;
  /** An estimate older than this is ignored (default 10 s). */
  staleMs?: number;
}

interface TrackState {
  /** Rank allowed by the last allocation. */
  cap: number;
  /** Bitrate of that layer at the time. */
  capBitrate: number;
  lastDown: number;
  holdMs: number;
  lastProbe: number;
}

export class BandwidthAllocator {
  private readonly upHeadroom: number;
  private readonly upHoldMs: number;
  private readonly maxHoldMs: number;
  private readonly appLimitedFactor: number;
  private readonly probeFailMs: number;
  private readonly staleMs: number;
  private estimate = 0;
  private estimateAt = Number.NEGATIVE_INFINITY;
  private readonly states = new Map<string, TrackState>();

  constructor(opts: BandwidthAllocatorOptions = {}) {
    this.upHeadroom = opts.upHeadroom ?? 1.2;
    this.upHoldMs = opts.upHoldMs ?? 4000;
    this.maxHoldMs = opts.maxHoldMs ?? 32_000;
    this.appLimitedFactor = opts.appLimitedFactor ?? 1.3;
    this.probeFailMs = opts.probeFailMs ?? 5000;
    this.staleMs = opts.staleMs ?? 10_000;
  }

  /**
   * Records the subscriber's available downlink bandwidth (bits/s). Zero means "no estimate yet"
   * (Chrome's first REMB can carry 0) and is ignored.
   */
  setEstimate(bps: number, now: number): void {
    if (!Number.isFinite(bps) || bps <= 0) return;
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
    for (const id of this.states.keys()) if (!known.has(id)) this.states.delete(id);
    const estimate = this.estimateBps(now);
    if (estimate === undefined) {
      this.states.clear();
      for (const t of tracks) out.set(t.id, Number.POSITIVE_INFINITY);
      return out;
    }
    let sending = reservedBps;
    for (const t of tracks) sending += this.states.get(t.id)?.capBitrate ?? 0;
    let mayProbe = estimate >= this.appLimitedFactor * sending;

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
      const state = this.states.get(track.id);
      const holding = state !== undefined && now - state.lastDown < state.holdMs;
      let index = 0;
      for (let i = 0; i < candidates.length; i++) {
        const layer = candidates[i]!;
        const up = state !== undefined && layer.rank > state.cap;
        const need = up ? layer.bitrate * this.upHeadroom : layer.bitrate;
        if (need > budget || (up && holding)) break;
        index = i;
      }
      let chosen = candidates[index]!;
      let probed = false;
      const next = candidates[index + 1];
      const probeDue = state !== undefined && !holding && now - state.lastProbe >= state.holdMs;
      if (mayProbe && probeDue && chosen.rank === state.cap && next !== undefined) {
        chosen = next;
        probed = true;
        mayProbe = false;
      }
      const limited = chosen !== candidates[candidates.length - 1];
      const updated: TrackState = state ?? { cap: chosen.rank, capBitrate: 0, lastDown: Number.NEGATIVE_INFINITY, holdMs: this.upHoldMs, lastProbe: Number.NEGATIVE_INFINITY };
      if (state !== undefined && limited && chosen.rank < state.cap) {
        // A step down for bandwidth: hold, longer if it undoes a recent try.
        updated.holdMs = now - state.lastProbe < this.probeFailMs ? Math.min(this.maxHoldMs, state.holdMs * 2) : this.upHoldMs;
        updated.lastDown = now;
      }
      if (probed) updated.lastProbe = now;
      updated.cap = chosen.rank;
      updated.capBitrate = chosen.bitrate;
      this.states.set(track.id, updated);
      budget -= chosen.bitrate;
      out.set(track.id, chosen.rank);
    }
    return out;
  }
}
