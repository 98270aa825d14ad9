/**
 * The per-packet forwarder with real werift RtpPackets: starts video at a keyframe, keeps
 * sequence numbers and timestamps continuous across a layer switch, never forwards while
 * disabled, renumbers header extensions, gives each subscriber its own copy and never changes
 * payload bytes (E2EE passthrough).
 */
import { describe, expect, it } from 'vitest';
import { RtpHeader, RtpPacket } from 'werift';
import { createSilentLogger } from '../../common/logger.ts';
import { DownForwarder, Upstream, isKeyframeStart, type ForwardedPacket } from './forwarder.ts';
import { PLI_INTERVAL_HIGHER_MS, PLI_INTERVAL_MS } from './upstream.ts';

const AUDIO_LEVEL = 'urn:ietf:params:rtp-hdrext:ssrc-audio-level';
const ABS_SEND_TIME = 'http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time';

// VP8 payload descriptors: X=1, I=1 (15-bit picture id), S=1, PID=0; then the VP8 header byte.
const vp8Key = (body: number[]) => Buffer.from([0x90, 0x80, 0x81, 0x23, 0x10, ...body]);
const vp8Delta = (body: number[]) => Buffer.from([0x90, 0x80, 0x81, 0x24, 0x11, ...body]);
const vp8Continuation = (body: number[]) => Buffer.from([0x80, 0x80, 0x81, 0x24, ...body]);

function packet(seq: number, ts: number, ssrc: number, payload: Buffer, extensions: { id: number; payload: Buffer }[] = []) {
  return new RtpPacket(
    new RtpHeader({ sequenceNumber: seq, timestamp: ts, ssrc, payloadType: 96, extensions, extension: extensions.length > 0 }),
    payload,
  );
}

function setup(kind: 'audio' | 'video', mimeType: string) {
  let now = 1000;
  const plis: number[] = [];
  const up = new Upstream({
    kind,
    mimeType,
    clockRate: kind === 'video' ? 90000 : 48000,
    now: () => now,
    sendPli: (ssrc) => plis.push(ssrc),
    extensionUri: (id) => ({ 1: AUDIO_LEVEL, 3: ABS_SEND_TIME })[id],
    logger: createSilentLogger(),
  });
  const sent: ForwardedPacket[] = [];
  const down = new DownForwarder(up, {
    ready: () => true,
    send: (rtp) => sent.push(rtp),
    extensionId: (uri) => (uri === AUDIO_LEVEL ? 7 : undefined),
  });
  up.attach(down);
  return { up, down, sent, plis, advance: (ms: number) => (now += ms) };
}

describe('isKeyframeStart', () => {
  it.each([
    ['VP8 keyframe start', 'video/VP8', vp8Key([0x9d, 0x01, 0x2a]), true],
    ['VP8 delta frame', 'video/VP8', vp8Delta([0, 0]), false],
    ['VP8 continuation packet', 'video/VP8', vp8Continuation([0x10]), false],
    ['VP8 short descriptor keyframe', 'video/VP8', Buffer.from([0x10, 0x10]), true],
    ['H.264 IDR', 'video/H264', Buffer.from([0x65, 0x88]), true],
    ['H.264 STAP-A with SPS', 'video/H264', Buffer.from([0x78, 0x00, 0x02, 0x67, 0x42]), true],
    ['H.264 FU-A start of IDR', 'video/H264', Buffer.from([0x7c, 0x85, 0x00]), true],
    ['H.264 non-IDR slice', 'video/H264', Buffer.from([0x41, 0x9a]), false],
    ['Opus', 'audio/opus', Buffer.from([0xfc, 0x01]), true],
  ])('%s', (_name, mime, payload, expected) => {
    expect(isKeyframeStart(mime, payload)).toBe(expected);
  });
});

describe('forwarder', () => {
  it('keeps a switch record only for the stretches it forwarded (one for a track that never switches)', () => {
    const audio = setup('audio', 'audio/opus');
    expect(audio.down.segmentsHeld).toBe(0);
    for (let i = 0; i < 100; i++) audio.up.onPacket('', packet(1000 + i, i * 960, 0xbbbb, Buffer.from([0xfc, i])));
    expect(audio.sent).toHaveLength(100);
    expect(audio.down.segmentsHeld).toBe(1);
    // Retransmissions look through the ring without touching the slots never used.
    const { up, down, sent } = setup('video', 'video/VP8');
    up.onPacket('', packet(500, 1000, 0x1111, vp8Key([1])));
    for (let i = 1; i < 20; i++) up.onPacket('', packet(500 + i, 1000 + i * 3000, 0x1111, vp8Delta([i])));
    expect(down.segmentsHeld).toBe(1);
    expect(down.retransmit(sent[10]!.header.sequenceNumber)?.header.sequenceNumber).toBe(sent[10]!.header.sequenceNumber);
    expect(down.retransmit((sent[0]!.header.sequenceNumber - 1) & 0xffff)).toBeUndefined();
  });

  it('waits for a keyframe, asking the publisher for one, before forwarding video', () => {
    const { up, sent, plis } = setup('video', 'video/VP8');
    up.onPacket('', packet(100, 9000, 0xaaaa, vp8Delta([1])));
    expect(sent).toHaveLength(0);
    expect(plis).toEqual([0xaaaa]);
    up.onPacket('', packet(101, 12000, 0xaaaa, vp8Key([2])));
    up.onPacket('', packet(102, 12000, 0xaaaa, vp8Continuation([3])));
    expect(sent.map((p) => p.header.sequenceNumber)).toEqual([101, 102]);
  });

  it('keeps sequence numbers and timestamps continuous when the source layer changes', () => {
    const { up, sent, plis, advance } = setup('video', 'video/VP8');
    up.onPacket('q', packet(500, 1000, 0x1111, vp8Key([1])));
    up.onPacket('q', packet(501, 4000, 0x1111, vp8Delta([2])));
    expect(sent.map((p) => p.header.sequenceNumber)).toEqual([500, 501]);
    // A better layer appears: the forwarder asks for its keyframe and switches only there.
    advance(33);
    up.onPacket('h', packet(60000, 777777, 0x2222, vp8Delta([3])));
    expect(plis).toContain(0x2222);
    up.onPacket('q', packet(502, 7000, 0x1111, vp8Delta([4])));
    advance(33);
    up.onPacket('h', packet(60001, 780000, 0x2222, vp8Key([5])));
    up.onPacket('h', packet(60002, 783000, 0x2222, vp8Delta([6])));
    up.onPacket('q', packet(503, 10000, 0x1111, vp8Delta([7])));
    const seqs = sent.map((p) => p.header.sequenceNumber);
    expect(seqs).toEqual([500, 501, 502, 503, 504]);
    const ts = sent.map((p) => p.header.timestamp);
    // After the switch the timestamp moves on by the elapsed time (33 ms at 90 kHz), no jump back.
    expect(ts[3]! - ts[2]!).toBe(Math.round(0.033 * 90000));
    expect(ts[4]! - ts[3]!).toBe(3000);
    // The new layer's picture ids continue the old ones (0x124 was last): only the descriptor changes.
    expect([...sent[3]!.payload]).toEqual([0x90, 0x80, 0x81, 0x25, 0x10, 5]);
    expect([...sent[4]!.payload]).toEqual([0x90, 0x80, 0x81, 0x26, 0x11, 6]);
  });

  it('wraps sequence numbers at 16 bits without a gap', () => {
    const { up, sent } = setup('audio', 'audio/opus');
    up.onPacket('', packet(65534, 1, 1, Buffer.from([1])));
    up.onPacket('', packet(65535, 961, 1, Buffer.from([2])));
    up.onPacket('', packet(0, 1921, 1, Buffer.from([3])));
    expect(sent.map((p) => p.header.sequenceNumber)).toEqual([65534, 65535, 0]);
  });

  it('forwards nothing while disabled and resumes at a keyframe', () => {
    const { up, down, sent, plis } = setup('video', 'video/VP8');
    up.onPacket('', packet(1, 0, 9, vp8Key([1])));
    down.setEnabled(false);
    for (let i = 2; i < 50; i++) up.onPacket('', packet(i, i * 3000, 9, vp8Delta([i])));
    expect(sent).toHaveLength(1);
    down.setEnabled(true);
    expect(plis.length).toBeGreaterThan(0);
    up.onPacket('', packet(50, 150000, 9, vp8Delta([50])));
    expect(sent).toHaveLength(1);
    up.onPacket('', packet(51, 153000, 9, vp8Key([51])));
    expect(sent).toHaveLength(2);
    // Continuous for the subscriber although 49 packets were skipped.
    expect(sent[1]!.header.sequenceNumber).toBe(2);
  });

  it('renumbers known header extensions and drops the rest', () => {
    const { up, sent } = setup('audio', 'audio/opus');
    up.onPacket(
      '',
      packet(10, 960, 5, Buffer.from([0xfc]), [
        { id: 1, payload: Buffer.from([0x85]) },
        { id: 3, payload: Buffer.from([1, 2, 3]) },
      ]),
    );
    expect(sent[0]!.header.extensions).toEqual([{ id: 7, payload: Buffer.from([0x85]) }]);
  });

  it('gives every subscriber its own packet and never alters payload bytes', () => {
    const { up, sent } = setup('video', 'video/VP8');
    const other: ForwardedPacket[] = [];
    up.attach(
      new DownForwarder(up, { ready: () => true, send: (rtp) => other.push(rtp), extensionId: () => undefined }),
    );
    // An encrypted frame: clear VP8 header, then ciphertext, IV and trailer bytes.
    const encrypted = vp8Key([0x9d, 0x01, 0x2a, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x11, 0x0c, 0x00]);
    const original = packet(1, 0, 3, encrypted);
    up.onPacket('', original);
    expect(sent[0]).not.toBe(other[0]);
    expect(sent[0]).not.toBe(original);
    expect(sent[0]!.payload.equals(encrypted)).toBe(true);
    expect(other[0]!.payload.equals(encrypted)).toBe(true);
    sent[0]!.header.sequenceNumber = 999;
    expect(other[0]!.header.sequenceNumber).toBe(1);
  });
});

describe('layer selection and loss recovery', () => {
  it('forwards the best layer not above the subscriber limit and moves at the next keyframe when the limit changes', () => {
    const { up, down, sent, plis, advance } = setup('video', 'video/VP8');
    down.setMaxRank(1); // LOW: rid q
    up.onPacket('q', packet(100, 1000, 0x1111, vp8Key([2])));
    up.onPacket('h', packet(9000, 1000, 0x2222, vp8Key([1])));
    expect(sent.map((p) => p.payload.at(-1))).toEqual([2]);
    expect(down.currentLayer).toBe('q');
    down.setMaxRank(3); // HIGH: best available, h
    expect(plis).toContain(0x2222);
    advance(33);
    up.onPacket('h', packet(9001, 4000, 0x2222, vp8Delta([3])));
    up.onPacket('q', packet(101, 4000, 0x1111, vp8Delta([4])));
    up.onPacket('h', packet(9002, 7000, 0x2222, vp8Key([5])));
    up.onPacket('q', packet(102, 7000, 0x1111, vp8Delta([6])));
    expect(sent.map((p) => p.payload.at(-1))).toEqual([2, 4, 5]);
    expect(down.currentLayer).toBe('h');
    expect(sent.map((p) => p.header.sequenceNumber)).toEqual([100, 101, 102]);
  });

  it('falls back to a live layer when the wanted one stops', () => {
    const { up, down, sent, advance } = setup('video', 'video/VP8');
    up.onPacket('h', packet(1, 0, 2, vp8Key([1])));
    expect(down.currentLayer).toBe('h');
    advance(2000); // h went quiet (dynacast or congestion at the publisher)
    up.onPacket('q', packet(50, 0, 1, vp8Key([2])));
    expect(down.currentLayer).toBe('q');
    expect(sent).toHaveLength(2);
  });

  it("answers a subscriber's NACK from the track cache with the offsets in force when the packet first went out", () => {
    const { up, down, sent, advance } = setup('video', 'video/VP8');
    down.setMaxRank(1);
    up.onPacket('q', packet(500, 1000, 0x1111, vp8Key([1])));
    up.onPacket('q', packet(501, 4000, 0x1111, vp8Delta([2])));
    down.setMaxRank(2);
    advance(33);
    up.onPacket('h', packet(7000, 90000, 0x2222, vp8Key([3])));
    up.onPacket('h', packet(7001, 93000, 0x2222, vp8Delta([4])));
    expect(sent.map((p) => p.header.sequenceNumber)).toEqual([500, 501, 502, 503]);
    // Packet 501 (layer q, before the switch) and 503 (layer h, after it).
    const old = down.retransmit(501)!;
    expect(old.header.sequenceNumber).toBe(501);
    expect(old.header.timestamp).toBe(sent[1]!.header.timestamp);
    expect(old.payload.equals(sent[1]!.payload)).toBe(true);
    const recent = down.retransmit(503)!;
    expect(recent.header.timestamp).toBe(sent[3]!.header.timestamp);
    expect(recent.payload.equals(sent[3]!.payload)).toBe(true);
    // Never sent (future) or before the first packet: nothing.
    expect(down.retransmit(600)).toBeUndefined();
    expect(down.packetsRetransmitted).toBe(2);
    expect(down.retransmitMisses).toBe(1);
  });

  it('NACKs gaps in the uplink once, then again after the retry interval, and counts recovered packets', () => {
    let now = 0;
    const nacks: number[][] = [];
    const up = new Upstream({
      kind: 'video',
      mimeType: 'video/VP8',
      clockRate: 90000,
      now: () => now,
      sendPli: () => undefined,
      sendNack: (_ssrc, seqs) => nacks.push([...seqs]),
      extensionUri: () => undefined,
      logger: createSilentLogger(),
    });
    up.onPacket('', packet(10, 0, 1, vp8Key([1])));
    up.onPacket('', packet(13, 0, 1, vp8Delta([2]))); // 11, 12 lost
    now += 10;
    up.onPacket('', packet(14, 0, 1, vp8Delta([3])));
    expect(nacks).toEqual([[11, 12]]);
    now += 5;
    up.onPacket('', packet(11, 0, 1, vp8Delta([4]))); // retransmission arrives
    now += 50;
    up.onPacket('', packet(15, 0, 1, vp8Delta([5])));
    expect(nacks).toEqual([[11, 12], [12]]);
    expect(up.uplinkNackStats).toEqual({ missed: 2, recovered: 1 });
  });
});

/** A padding-only packet as werift parses one: padding bit, padding stripped, empty payload. */
function paddingOnly(seq: number, ts: number, ssrc: number) {
  return new RtpPacket(new RtpHeader({ sequenceNumber: seq, timestamp: ts, ssrc, payloadType: 96, padding: true, paddingSize: 224 }), Buffer.alloc(0));
}

describe('padding-only packets (bandwidth probes) are not media', () => {
  it('are not forwarded, and the subscriber sees no gap in sequence numbers', () => {
    const { up, down, sent } = setup('video', 'video/VP8');
    up.onPacket('', packet(100, 9000, 0xaaaa, vp8Key([1])));
    up.onPacket('', packet(101, 9000, 0xaaaa, vp8Continuation([2])));
    up.onPacket('', paddingOnly(102, 9000, 0xaaaa));
    up.onPacket('', paddingOnly(103, 9000, 0xaaaa));
    up.onPacket('', packet(104, 12000, 0xaaaa, vp8Delta([3])));
    up.onPacket('', paddingOnly(105, 12000, 0xaaaa));
    up.onPacket('', packet(106, 15000, 0xaaaa, vp8Delta([4])));
    expect(sent.map((p) => p.header.sequenceNumber)).toEqual([100, 101, 102, 103]);
    expect(sent.every((p) => p.payload.length > 0)).toBe(true);
    // NACKs still find the right packets across the dropped padding.
    expect(down.retransmit(101)!.payload.equals(sent[1]!.payload)).toBe(true);
    expect(down.retransmit(102)!.payload.equals(sent[2]!.payload)).toBe(true);
    expect(down.retransmit(103)!.payload.equals(sent[3]!.payload)).toBe(true);
  });

  it('leaves the gap of padding that arrives out of order, and places a late media packet by its own stretch', () => {
    const { up, sent } = setup('video', 'video/VP8');
    up.onPacket('', packet(200, 9000, 0xaaaa, vp8Key([1])));
    up.onPacket('', packet(202, 9000, 0xaaaa, vp8Continuation([3]))); // 201 late
    up.onPacket('', paddingOnly(203, 9000, 0xaaaa));
    up.onPacket('', packet(201, 9000, 0xaaaa, vp8Continuation([2])));
    up.onPacket('', packet(204, 12000, 0xaaaa, vp8Delta([4])));
    expect(sent.map((p) => p.header.sequenceNumber)).toEqual([200, 202, 201, 203]);
  });

  it('do not keep a simulcast layer alive', () => {
    const { up, sent, advance } = setup('video', 'video/VP8');
    up.onPacket('f', packet(1, 1000, 0xf, vp8Key([1])));
    up.onPacket('q', packet(1, 1000, 0x1, vp8Key([1])));
    expect(up.bestLayer(up.now())).toBe('f');
    // f stops sending media; only padding arrives on it from now on.
    for (let i = 0; i < 40; i++) {
      advance(50);
      up.onPacket('f', paddingOnly(2 + i, 1000, 0xf));
      up.onPacket('q', packet(2 + i, 1000 + i * 3000, 0x1, vp8Delta([2])));
    }
    expect(up.bestLayer(up.now())).toBe('q');
    expect(up.layers.find((l) => l.rid === 'f')!.bitrate).toBe(0);
    expect(sent.every((p) => p.payload.length > 0)).toBe(true);
  });

  it('a layer heard only as padding is never chosen', () => {
    const { up, sent } = setup('video', 'video/VP8');
    up.onPacket('h', paddingOnly(1, 0, 0x2));
    expect(up.bestLayer(up.now())).toBeUndefined();
    expect(sent).toHaveLength(0);
  });
});

describe('keyframe requests to a publisher', () => {
  it('coalesce every subscriber’s request into one per layer and interval: 500 ms for the low layer, 1 s above (LiveKit)', () => {
    const { up, down, plis, advance } = setup('video', 'video/VP8');
    up.onPacket('q', packet(1, 0, 0x1, vp8Key([1])));
    up.onPacket('h', packet(1, 0, 0x2, vp8Key([1])));
    up.onPacket('f', packet(1, 0, 0x3, vp8Key([1])));
    plis.length = 0;
    advance(PLI_INTERVAL_HIGHER_MS);
    for (let i = 0; i < 20; i++) {
      up.requestKeyframe('q');
      up.requestKeyframe('f');
      down.requestKeyframe();
    }
    expect(plis.filter((s) => s === 0x1)).toHaveLength(1);
    expect(plis.filter((s) => s === 0x3)).toHaveLength(1);
    advance(PLI_INTERVAL_MS);
    up.requestKeyframe('q');
    up.requestKeyframe('f');
    expect(plis.filter((s) => s === 0x1)).toHaveLength(2);
    expect(plis.filter((s) => s === 0x3)).toHaveLength(1);
    advance(PLI_INTERVAL_HIGHER_MS - PLI_INTERVAL_MS);
    up.requestKeyframe('f');
    expect(plis.filter((s) => s === 0x3)).toHaveLength(2);
  });

  it('a subscriber waiting for a layer switch asks at most once per interval however many packets arrive', () => {
    const { up, down, plis, advance } = setup('video', 'video/VP8');
    up.onPacket('q', packet(1, 0, 0x1, vp8Key([1])));
    up.onPacket('f', packet(1, 0, 0x3, vp8Delta([1])));
    plis.length = 0;
    down.setMaxRank(3);
    for (let i = 0; i < 200; i++) {
      advance(5); // 1 s of f delta packets, no keyframe yet
      up.onPacket('f', packet(2 + i, i * 450, 0x3, vp8Delta([2])));
      up.onPacket('q', packet(2 + i, i * 450, 0x1, vp8Delta([2])));
    }
    expect(plis.filter((s) => s === 0x3).length).toBeLessThanOrEqual(1);
  });
});
