/**
 * The downtracks of one subscriber PC (split from transport.ts): for each subscribed track the
 * forwarder (downtrack.ts), the send path it feeds (fast-send.ts, werift's `sendRtp` when that
 * declines), the takeover of the sender's RTCP (sender-feedback.ts), and the `DownTrack` the
 * session layer holds; and across them the subscriber's bandwidth estimate (REMB), which caps
 * each video downtrack's layer (bandwidth-allocator.ts).
 *
 * Per packet (`send` below): the outgoing counter, the fast send, one sampled latency
 * observation; nothing else.
 *
 * Lifecycle: one per transport; `add` per subscription (the transport adds the transceiver
 * and negotiates); a DownTrack's `close` detaches it and calls back `onClosed`; `close()`
 * (transport closing) detaches all and stops the estimate timer.
 */
import type { RTCRtpTransceiver } from 'werift';
import type { Logger } from '../../common/logger.ts';
import type { Clock, TimerHandle } from '../../common/clock.ts';
import type { DownlinkStats, DownTrack, DownTrackStats } from '../rtc/types.ts';
import { DownForwarder, toRtpPacket, type Upstream } from './forwarder.ts';
import { LAYER_STALE_MS } from './upstream.ts';
import type { WeriftTransportConfig } from './peer-config.ts';
import { takeOverSenderFeedback, type FeedbackCounts } from './sender-feedback.ts';
import { createFastSend } from './fast-send.ts';
import { ReceiverReportState } from './link-stats.ts';
import { BandwidthAllocator, type AllocatorTrack } from './bandwidth-allocator.ts';

/** A subscriber's REMB estimate is forgotten (layers uncapped) after this long without one. */
const ESTIMATE_STALE_MS = 10_000;

interface DownEntry {
  id: string;
  forwarder: DownForwarder;
  upstream: Upstream;
  enabled: boolean;
  /** Highest layer rank the subscriber's settings allow; the bandwidth cap may lower it. */
  requestedRank: number;
}

export interface SubscriptionsDeps {
  log: Logger;
  clock: Clock;
  metrics: WeriftTransportConfig['metrics'];
  dropOutgoing: WeriftTransportConfig['dropOutgoing'];
  participantSid: string;
  /** Whether the subscriber PC is connected. */
  connected: () => boolean;
}

export class Subscriptions {
  private readonly deps: SubscriptionsDeps;
  private readonly downs = new Set<DownEntry>();
  /** Caps subscribed layers by the subscriber's REMB estimate (bandwidth-allocator.ts). */
  private readonly allocator = new BandwidthAllocator({ staleMs: ESTIMATE_STALE_MS });
  private nextDownId = 0;
  /** Re-allocates once the last estimate has gone stale (no REMB since). */
  private staleTimer: TimerHandle | undefined;
  private closed = false;

  constructor(deps: SubscriptionsDeps) {
    this.deps = deps;
  }

  /** A new downtrack of `upstream` on `transceiver` (already added, sendonly). */
  add(upstream: Upstream, transceiver: RTCRtpTransceiver, hooks: { onClosed: () => void }): DownTrack {
    const { log, metrics, clock } = this.deps;
    const sender = transceiver.sender;
    const kind = upstream.kind;
    const drop = this.deps.dropOutgoing;
    const subscriber = this.deps.participantSid;
    const connected = this.deps.connected;
    const fastSend = createFastSend(sender, log);
    const latency = metrics?.forwardLatency;
    const packets = metrics?.packets;
    const forwarder = new DownForwarder(upstream, {
      ready: () => connected() && sender.codec !== undefined,
      send: (rtp) => {
        if (drop?.({ subscriber, kind, sequenceNumber: rtp.header.sequenceNumber })) return;
        packets?.outgoing(rtp.payload.length);
        if (!fastSend(rtp)) sender.sendRtp(toRtpPacket(rtp)).catch((err: unknown) => log.debug({ err }, 'sendRtp failed'));
        // A sampled packet (see the transport's onPublisherTrack): receipt → handed to this sender.
        if (latency && upstream.rxStamp !== 0) latency.observe((performance.now() - upstream.rxStamp) / 1000);
      },
      extensionId: (uri) => transceiver.headerExtensions.find((e) => e.uri === uri)?.id,
    });
    const counts: FeedbackCounts = { nacks: 0, keyframeRequests: 0 };
    const reports = new ReceiverReportState();
    takeOverSenderFeedback({
      sender,
      forwarder,
      counts,
      metrics,
      log,
      connected,
      reports,
      kind,
      wallNow: () => clock.now(),
      onEstimate: (bps) => this.onEstimate(bps),
    });
    const entry: DownEntry = {
      id: String(++this.nextDownId),
      forwarder,
      upstream,
      enabled: true,
      requestedRank: Number.POSITIVE_INFINITY,
    };
    this.downs.add(entry);
    upstream.attach(forwarder);
    let closed = false;
    return {
      get packetsSent() {
        return forwarder.packetsSent;
      },
      stats: (): DownTrackStats => ({
        packetsSent: forwarder.packetsSent,
        packetsRetransmitted: forwarder.packetsRetransmitted,
        retransmitMisses: forwarder.retransmitMisses,
        nacksReceived: counts.nacks,
        keyframeRequestsReceived: counts.keyframeRequests,
        layer: forwarder.currentLayer,
        layerSwitches: forwarder.switches,
        availableBandwidth: this.availableBandwidth,
      }),
      link: (): DownlinkStats => ({
        packetsSent: forwarder.packetsSent,
        reports: reports.reports,
        reportedExpected: reports.reportedExpected,
        reportedLost: reports.reportedLost,
        rttMs: reports.rttMs,
        jitterUs: reports.jitterUs,
        lastReportAt: reports.lastReportAt,
      }),
      setEnabled: (enabled) => {
        entry.enabled = enabled;
        forwarder.setEnabled(enabled);
        this.applyBandwidthCaps();
      },
      // VideoQuality LOW/MEDIUM/HIGH = rid q/h/f = layer rank 1/2/3.
      setMaxQuality: (quality) => {
        entry.requestedRank = quality + 1;
        this.applyBandwidthCaps();
      },
      close: () => {
        if (closed) return;
        closed = true;
        upstream.detach(forwarder);
        this.downs.delete(entry);
        if (this.closed) return;
        this.applyBandwidthCaps();
        hooks.onClosed();
      },
    };
  }

  /** The subscriber PC just connected: every video downtrack starts at a keyframe. */
  requestKeyframes(): void {
    for (const down of this.downs) down.forwarder.requestKeyframe();
  }

  /** The subscriber's REMB: its available downlink bandwidth in bits/s. */
  private onEstimate(bps: number): void {
    if (this.closed) return;
    const clock = this.deps.clock;
    this.allocator.setEstimate(bps, clock.now());
    this.applyBandwidthCaps();
    clock.clearTimeout(this.staleTimer);
    this.staleTimer = clock.setTimeout(() => this.applyBandwidthCaps(), ESTIMATE_STALE_MS + 1);
  }

  /** The subscriber's current downlink estimate (bits/s), undefined when none is known. */
  get availableBandwidth(): number | undefined {
    return this.allocator.estimateBps(this.deps.clock.now());
  }

  /** Each video downtrack's layer limit: its settings, lowered to what the estimate allows. */
  private applyBandwidthCaps(): void {
    const now = this.deps.clock.now();
    let reserved = 0;
    const tracks: AllocatorTrack[] = [];
    for (const down of this.downs) {
      if (!down.enabled) continue;
      const live = down.upstream.layers.filter((l) => now - l.lastSeen <= LAYER_STALE_MS);
      if (down.upstream.kind === 'audio') {
        for (const l of live) reserved += l.bitrate;
        continue;
      }
      tracks.push({ id: down.id, requestedRank: down.requestedRank, layers: live });
    }
    const caps = this.allocator.allocate(tracks, reserved, now);
    for (const down of this.downs) {
      if (down.upstream.kind !== 'video') continue;
      down.forwarder.setMaxRank(Math.min(down.requestedRank, caps.get(down.id) ?? Number.POSITIVE_INFINITY));
    }
  }

  close(): void {
    this.closed = true;
    this.deps.clock.clearTimeout(this.staleTimer);
    for (const down of this.downs) down.upstream.detach(down.forwarder);
    this.downs.clear();
  }
}
