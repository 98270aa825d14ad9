/**
 * The werift side of one participant: the publisher PC (client offers, we answer and receive)
 * and the subscriber PC (we offer: data channels plus one sendonly m-line per subscribed
 * track, msid `PA_x|TR_y`). Implements the session layer's `MediaTransport`. Its parts:
 * peer-config.ts (codecs, extensions, ICE), subscriptions.ts (the subscriber's downtracks:
 * forwarders, send path, their RTCP, layers capped by its REMB estimate), data-channels.ts
 * (`_reliable`/`_lossy`), twcc.ts (transport-wide CC feedback to the publisher),
 * werift-internals.ts (every private werift shape, probed at start-up); forwarding itself is
 * forwarder.ts.
 *
 * Traps of werift 0.25.2 handled here: `onTrack` fires inside
 * setRemoteDescription, so remote transceivers are hooked first and the offer's mid → msid map
 * is read before; PLI goes to the SSRC seen in packets (rid tracks have none); the publisher PC
 * offers `sdes:mid` + `rtp-stream-id` or Chrome's simulcast never connects; no Google STUN
 * default; candidates come only from `rtc.node_ip` within `rtc.port_range_*`.
 *
 * Lifecycle: made by the factory per participant; `start()` sends the first subscriber offer;
 * offers/answers on each PC are applied one at a time; `close()` closes both PCs and every
 * upstream/downtrack it owns. Event callbacks never throw into werift (errors are logged).
 */
import { randomInt } from 'node:crypto';
import {
  GenericNack,
  MediaStream,
  RTCPeerConnection,
  RTP_EXTENSION_URI,
  RtcpTransportLayerFeedback,
  type MediaStreamTrack,
  type RtcpPacket,
  type RtpPacket,
  type RTCRtpTransceiver,
} from 'werift';
import { SessionDescription, SignalResponse } from '@livekit/protocol';
import type { Logger } from '../../common/logger.ts';
import type { Clock, TimerHandle } from '../../common/clock.ts';
import type {
  DataChannelKind,
  DownTrack,
  IceCandidateInit,
  MediaTransport,
  MediaTransportEvents,
  MediaTransportFactory,
  MediaTransportOptions,
  SignalTarget,
  UpstreamTrack,
} from '../rtc/types.ts';
import { Upstream, type PacketTap } from './forwarder.ts';
import { Subscriptions } from './subscriptions.ts';
import { canonicalMime, gatheringComplete, peerConfig, type WeriftTransportConfig } from './peer-config.ts';
import { SubscriberDataChannels } from './data-channels.ts';
import { useKeyObjectsForSrtp } from './srtp-keys.ts';
import { TwccFeedback, twccFeedbackFor } from './twcc.ts';
import { parseMediaSections, remoteSends, type MediaSection } from './sdp.ts';
import { createWeriftGuard, type WeriftGuard } from './werift-guard.ts';
import { installWeriftPatches, turnOffReceiverFeedback } from './werift-internals.ts';
import { closePeer, watchDtls } from './peer-lifecycle.ts';
import { createPortSource, type PortLease, type PortSource } from './port-pool.ts';

const TWCC_URI = RTP_EXTENSION_URI.transportWideCC;
/** A subscriber offer unanswered this long fails the transport (LiveKit's negotiationFailedTimeout). */
export const NEGOTIATION_TIMEOUT_MS = 15_000;
/** A participant whose subscriber PC has not connected this long after joining is ended (LiveKit: 1 min). */
export const CONNECT_TIMEOUT_MS = 60_000;

class WeriftTransport implements MediaTransport {
  private readonly log: Logger;
  private readonly events: MediaTransportEvents;
  private readonly pub: RTCPeerConnection;
  private readonly sub: RTCPeerConnection;
  private readonly channels: SubscriberDataChannels;
  /** DTLS transports whose SRTP keys are prepared once (sfu/media/srtp-keys.ts). */
  private readonly srtpPrepared = new WeakSet<object>();
  /** DTLS transports whose closing/failing is watched (peer-lifecycle.ts). */
  private readonly dtlsWatched = new WeakSet<object>();
  private readonly guard: WeriftGuard;
  private failed = false;
  private readonly ports: PortSource;
  private readonly leases = new Map<SignalTarget, PortLease>();
  /** Pending subscriber offer's deadline (NEGOTIATION_TIMEOUT_MS). */
  private offerTimer: TimerHandle | undefined;
  /** Deadline for the subscriber PC to connect (CONNECT_TIMEOUT_MS). */
  private connectTimer: TimerHandle | undefined;
  private readonly upstreams = new Map<string, Upstream>();
  private pubSections = new Map<string, MediaSection>();
  private pubQueue: Promise<void> = Promise.resolve();
  private subQueue: Promise<void> = Promise.resolve();
  private subOfferId = 0;
  private awaitingAnswer = false;
  private renegotiate = false;
  private subConnected = false;
  private closed = false;
  private readonly clock: Clock;
  private readonly tap: PacketTap | undefined;
  private readonly dropOutgoing: WeriftTransportConfig['dropOutgoing'];
  private readonly metrics: WeriftTransportConfig['metrics'];
  private readonly participantSid: string;
  private readonly twcc = new TwccFeedback({ senderSsrc: randomInt(1, 0xffffffff) });
  /** The subscriber's downtracks and their bandwidth caps (subscriptions.ts). */
  private readonly subscriptions: Subscriptions;

  constructor(
    cfg: WeriftTransportConfig,
    opts: MediaTransportOptions,
    logger: Logger,
    clock: Clock,
    guard: WeriftGuard,
    ports: PortSource,
  ) {
    this.log = logger.child({ participant: opts.participantSid });
    this.guard = guard;
    this.ports = ports;
    this.events = opts.events;
    this.clock = clock;
    this.tap = cfg.tap;
    this.dropOutgoing = cfg.dropOutgoing;
    this.metrics = cfg.metrics;
    this.participantSid = opts.participantSid;
    this.channels = new SubscriberDataChannels({
      log: this.log,
      now: () => clock.now(),
      onDrop: (kind, reason) => this.metrics?.transport?.dataDropped(kind, reason),
    });
    this.subscriptions = new Subscriptions({
      log: this.log,
      clock,
      metrics: cfg.metrics,
      dropOutgoing: cfg.dropOutgoing,
      participantSid: opts.participantSid,
      connected: () => this.subConnected,
    });
    this.pub = new RTCPeerConnection(peerConfig(cfg, 'publisher'));
    this.sub = new RTCPeerConnection(peerConfig(cfg, 'subscriber'));
    cfg.observePeerConnection?.(this.pub, 'publisher');
    cfg.observePeerConnection?.(this.sub, 'subscriber');

    this.pub.onRemoteTransceiverAdded.subscribe((transceiver) => {
      turnOffReceiverFeedback(transceiver.receiver);
      transceiver.onTrack.subscribe((track) => this.onPublisherTrack(transceiver, track));
    });
    this.pub.onDataChannel.subscribe((channel) => {
      const kind: DataChannelKind = channel.label === '_lossy' ? 'lossy' : 'reliable';
      channel.onMessage.subscribe((msg) => {
        if (typeof msg === 'string') return;
        this.safely('data', () => this.events.onData(kind, new Uint8Array(msg)));
      });
    });
    this.sub.connectionStateChange.subscribe((state) => {
      if (state === 'connected' && !this.subConnected) {
        this.subConnected = true;
        this.clock.clearTimeout(this.connectTimer);
        this.log.debug('subscriber transport connected');
        this.subscriptions.requestKeyframes();
        this.safely('connected', () => this.events.onConnected());
      } else if (state === 'failed') {
        this.fail('subscriber transport failed');
      }
    });
    this.pub.connectionStateChange.subscribe((state) => {
      if (state === 'failed') this.fail('publisher transport failed');
    });
  }

  /**
   * A PC failed or its DTLS session ended on its own: media has stopped for good, so the session
   * layer ends the participant (leave with RECONNECT: the client rejoins) and closes us. Once.
   */
  private fail(reason: string): void {
    if (this.closed || this.failed) return;
    this.failed = true;
    this.log.warn({ reason }, 'media transport failed: ending the session');
    this.metrics?.transport?.failed();
    this.safely('failed', () => this.events.onFailed(reason));
  }

  /**
   * After a local description has gathered its candidates (its sockets exist, no peer knows them
   * yet): guard the sockets and watch the DTLS sessions.
   */
  private secure(pc: RTCPeerConnection, role: SignalTarget): void {
    if (this.closed) {
      // Closed while this description was being applied: its sockets were bound after
      // close() stopped the PC, so they are closed here.
      void closePeer(pc, this.log, this.clock);
      return;
    }
    this.guard.protect(pc);
    watchDtls(pc, this.dtlsWatched, (state) => this.fail(`${role} DTLS session ${state}`));
  }

  private safely(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.error({ err }, `transport event handler failed: ${what}`);
    }
  }

  private send(msg: SignalResponse): void {
    if (!this.closed) this.safely('signal', () => this.events.onSignal(msg));
  }

  start(): void {
    this.channels.open(this.sub);
    this.connectTimer = this.clock.setTimeout(() => {
      if (!this.subConnected) this.fail(`subscriber transport not connected within ${CONNECT_TIMEOUT_MS / 1000} s`);
    }, CONNECT_TIMEOUT_MS);
    this.negotiate();
  }

  /**
   * Gives `pc` its UDP ports before it first binds; false, and the transport failed, when the
   * range is used up. The range is narrowed in place: werift's ICE gatherer keeps a reference
   * to the config's array from when it was made (the subscriber's, by its data channels, before
   * any port is leased) and reads it when it gathers.
   */
  private async takePorts(pc: RTCPeerConnection, role: SignalTarget): Promise<boolean> {
    if (this.leases.has(role)) return true;
    const lease = await this.ports.take(role);
    if (this.closed) {
      lease?.release();
      return false;
    }
    if (!lease) {
      this.fail(`no free UDP port for the ${role} connection`);
      return false;
    }
    this.leases.set(role, lease);
    const range = pc.config.icePortRange;
    if (range) {
      range[0] = lease.range[0];
      range[1] = lease.range[1];
    } else {
      pc.config.icePortRange = [lease.range[0], lease.range[1]];
    }
    return true;
  }

  // ---- subscriber PC (we offer) ----

  private negotiate(): void {
    if (this.closed) return;
    if (this.awaitingAnswer) {
      this.renegotiate = true;
      return;
    }
    this.awaitingAnswer = true;
    this.subQueue = this.subQueue
      .then(async () => {
        if (this.closed || !(await this.takePorts(this.sub, 'subscriber'))) return;
        const offer = await this.sub.createOffer();
        await this.sub.setLocalDescription(offer);
        useKeyObjectsForSrtp(this.sub, this.srtpPrepared, this.log);
        await gatheringComplete(this.sub);
        this.secure(this.sub, 'subscriber');
        if (this.closed) return;
        const id = ++this.subOfferId;
        const sdp = this.sub.localDescription?.sdp ?? offer.sdp;
        this.clock.clearTimeout(this.offerTimer);
        this.offerTimer = this.clock.setTimeout(
          () => this.fail(`subscriber offer ${id} not answered within ${NEGOTIATION_TIMEOUT_MS / 1000} s`),
          NEGOTIATION_TIMEOUT_MS,
        );
        this.send(
          new SignalResponse({ message: { case: 'offer', value: new SessionDescription({ type: 'offer', sdp, id }) } }),
        );
      })
      .catch((err: unknown) => {
        this.awaitingAnswer = false;
        this.log.warn({ err }, 'subscriber offer failed');
      });
  }

  async handleAnswer(sdp: string, id: number): Promise<void> {
    const run = this.subQueue.then(async () => {
      if (this.closed) return;
      if (id !== 0 && id !== this.subOfferId) {
        this.log.debug({ id, expected: this.subOfferId }, 'ignoring answer to an older offer');
        return;
      }
      await this.sub.setRemoteDescription({ type: 'answer', sdp });
      this.clock.clearTimeout(this.offerTimer);
      this.awaitingAnswer = false;
      if (this.renegotiate) {
        this.renegotiate = false;
        this.negotiate();
      }
    });
    this.subQueue = run.catch((err: unknown) => {
      this.awaitingAnswer = false;
      this.log.warn({ err }, 'applying subscriber answer failed');
    });
    await this.subQueue;
  }

  subscribe(upstream: UpstreamTrack, streamId: string, trackId: string): DownTrack {
    if (!(upstream instanceof Upstream)) throw new TypeError('upstream from another transport implementation');
    const transceiver = this.sub.addTransceiver(upstream.kind, {
      direction: 'sendonly',
      streams: [new MediaStream({ id: streamId })],
    });
    const down = this.subscriptions.add(upstream, transceiver, {
      onClosed: () => {
        try {
          this.sub.removeTrack(transceiver.sender);
        } catch (err) {
          this.log.debug({ err }, 'removeTrack failed');
        }
        this.negotiate();
      },
    });
    this.log.debug({ streamId, trackId, mid: transceiver.mid }, 'downtrack added');
    this.negotiate();
    return down;
  }

  sendData(kind: DataChannelKind, bytes: Uint8Array): void {
    if (!this.closed) this.channels.send(kind, bytes);
  }

  // ---- publisher PC (client offers) ----

  async handleOffer(sdp: string, id: number): Promise<void> {
    const run = this.pubQueue.then(async () => {
      if (this.closed || !(await this.takePorts(this.pub, 'publisher'))) return;
      const sections = parseMediaSections(sdp);
      this.pubSections = new Map(sections.map((s) => [s.mid, s]));
      for (const [mid, upstream] of Array.from(this.upstreams)) {
        const section = this.pubSections.get(mid);
        if (!section || !remoteSends(section)) {
          upstream.close();
          this.upstreams.delete(mid);
          this.safely('media ended', () => this.events.onMediaEnded(mid));
        }
      }
      await this.pub.setRemoteDescription({ type: 'offer', sdp });
      for (const transceiver of this.pub.getTransceivers()) {
        if (transceiver.mid !== null && !this.upstreams.has(transceiver.mid)) {
          const section = this.pubSections.get(transceiver.mid);
          if (section && remoteSends(section) && transceiver.codecs.length > 0) this.announce(transceiver, section);
        }
      }
      const answer = await this.pub.createAnswer();
      await this.pub.setLocalDescription(answer);
      useKeyObjectsForSrtp(this.pub, this.srtpPrepared, this.log);
      await gatheringComplete(this.pub);
      this.secure(this.pub, 'publisher');
      if (this.closed) return;
      const answerSdp = this.pub.localDescription?.sdp ?? answer.sdp;
      this.send(
        new SignalResponse({
          message: { case: 'answer', value: new SessionDescription({ type: 'answer', sdp: answerSdp, id }) },
        }),
      );
    });
    this.pubQueue = run.catch((err: unknown) => this.log.warn({ err }, 'publisher offer failed'));
    await this.pubQueue;
  }

  /** Hooked before SRD; packets are routed by mid to the upstream made after SRD. */
  private onPublisherTrack(transceiver: RTCRtpTransceiver, track: MediaStreamTrack): void {
    const rid = track.rid ?? '';
    const timed = this.metrics?.forwardLatency !== undefined;
    let count = 0;
    track.onReceiveRtp.subscribe((rtp) => {
      const mid = transceiver.mid;
      if (mid === null) return;
      this.metrics?.packets.incoming(rtp.payload.length);
      this.feedTwcc(transceiver, rtp);
      const upstream = this.upstreams.get(mid);
      if (!upstream) return;
      if (!timed || (++count & LATENCY_SAMPLE_MASK) !== 0) {
        upstream.onPacket(rid, rtp);
        return;
      }
      // Sampled: the downtracks' send callbacks observe the time since this stamp.
      upstream.rxStamp = performance.now();
      try {
        upstream.onPacket(rid, rtp);
      } finally {
        upstream.rxStamp = 0;
      }
    });
    // A track that shows up after SRD (no a=ssrc, first packet) is announced here.
    const mid = transceiver.mid;
    if (mid !== null && !this.upstreams.has(mid) && this.pub.signalingState === 'stable') {
      const section = this.pubSections.get(mid);
      if (section && remoteSends(section)) this.announce(transceiver, section);
    }
  }

  /** Records the packet's transport-wide sequence number and sends feedback when due. */
  private feedTwcc(transceiver: RTCRtpTransceiver, rtp: RtpPacket): void {
    const feedback = twccFeedbackFor(this.twcc, rtp, this.pub.extIdUriMap, TWCC_URI);
    const dtls = transceiver.receiver.dtlsTransport;
    if (!feedback || !dtls) return;
    dtls.sendRtcp([{ serialize: () => feedback } as unknown as RtcpPacket]).catch((err: unknown) => this.log.debug({ err }, 'TWCC feedback failed'));
  }

  private announce(transceiver: RTCRtpTransceiver, section: MediaSection): void {
    const mid = section.mid;
    const codec = transceiver.codecs[0];
    if (!codec) return;
    const kind = transceiver.kind === 'video' ? 'video' : 'audio';
    const upstream = new Upstream({
      kind,
      mimeType: canonicalMime(codec.mimeType),
      clockRate: codec.clockRate,
      now: () => this.clock.now(),
      sendPli: (ssrc) => {
        this.metrics?.rtcp.pli('outgoing');
        transceiver.receiver.sendRtcpPLI(ssrc).catch((err: unknown) => this.log.debug({ err }, 'PLI failed'));
      },
      sendNack: (ssrc, seqs) => {
        const receiver = transceiver.receiver;
        if (!receiver.dtlsTransport) return;
        this.metrics?.rtcp.nack('outgoing');
        const feedback = new GenericNack({ senderSsrc: receiver.rtcpSsrc, mediaSourceSsrc: ssrc, lost: seqs.slice() });
        receiver.dtlsTransport
          .sendRtcp([new RtcpTransportLayerFeedback({ feedback })])
          .catch((err: unknown) => this.log.debug({ err }, 'NACK failed'));
      },
      extensionUri: (extId) => this.pub.extIdUriMap[extId],
      logger: this.log,
      tap: this.tap,
      streams: this.metrics?.streams,
    });
    this.upstreams.set(mid, upstream);
    this.log.debug({ mid, kind, mime: upstream.mimeType, msid: section.msidTrackId }, 'incoming media');
    this.safely('incoming media', () =>
      this.events.onIncomingMedia({
        mid,
        kind,
        msidTrackId: section.msidTrackId,
        mimeType: upstream.mimeType,
        source: upstream,
      }),
    );
  }

  // ---- both ----

  async addCandidate(target: SignalTarget, init: IceCandidateInit): Promise<void> {
    if (this.closed || !init.candidate) return;
    const pc = target === 'publisher' ? this.pub : this.sub;
    try {
      await pc.addIceCandidate({
        candidate: init.candidate,
        sdpMid: init.sdpMid ?? undefined,
        sdpMLineIndex: init.sdpMLineIndex ?? undefined,
        usernameFragment: init.usernameFragment ?? undefined,
      });
    } catch (err) {
      this.log.debug({ err, target }, 'remote candidate refused');
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.clock.clearTimeout(this.offerTimer);
    this.clock.clearTimeout(this.connectTimer);
    this.subscriptions.close();
    for (const upstream of this.upstreams.values()) upstream.close();
    this.upstreams.clear();
    const leases = Array.from(this.leases.values());
    void Promise.all([closePeer(this.pub, this.log, this.clock), closePeer(this.sub, this.log, this.clock)]).finally(() => {
      for (const lease of leases) lease.release();
    });
  }
}

/** One received packet in this many is timed through the SFU (livekit_forward_latency_seconds). */
const LATENCY_SAMPLE_MASK = 15;

export function createWeriftTransportFactory(deps: {
  config: WeriftTransportConfig;
  logger: Logger;
  clock: Clock;
}): MediaTransportFactory {
  installWeriftPatches(deps.logger);
  const transport = deps.config.metrics?.transport;
  const ports = createPortSource({
    range: deps.config.portRange,
    nodeIp: deps.config.nodeIp,
    logger: deps.logger,
    clock: deps.clock,
    ...(transport ? { metrics: transport } : {}),
  });
  const guard = createWeriftGuard({ logger: deps.logger, onDrop: (reason) => transport?.datagramDropped(reason) });
  const factory: MediaTransportFactory = (opts) =>
    new WeriftTransport(deps.config, opts, deps.logger, deps.clock, guard, ports);
  factory.canAdmit = () => ports.admit();
  return factory;
}
