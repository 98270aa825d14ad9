/**
 * RTP and RTCP into the forwarding path (sfu/media): datagrams as they arrive from a publisher
 * (recorded-shape Opus and VP8 packets, mutated as bytes, plus generated headers and VP8
 * payload descriptors) are parsed with werift's RtpPacket as the transport does and, when they
 * parse, handed to an Upstream with two subscribers' DownForwarders on random simulcast layers,
 * with NACK retransmissions, layer caps, keyframe requests and time jumps in between; RTCP
 * bytes go through werift's parser and our NACK and transport-wide-CC readers. werift refusing
 * a datagram is expected (the transport drops it); our code throwing is a crash.
 */
import fc from 'fast-check';
import { GenericNack, RtcpPacketConverter, RtcpTransportLayerFeedback, RtpHeader, RtpPacket } from 'werift';
import { createSilentLogger } from '../../../common/logger.ts';
import { DownForwarder, Upstream } from '../../../sfu/media/forwarder.ts';
import { installRtpHeaderGuard } from '../../../sfu/media/rtp-guard.ts';
import { nackedSequenceNumbers } from '../../../sfu/media/sender-feedback.ts';
import { transportSequenceNumber, TwccFeedback } from '../../../sfu/media/twcc.ts';
import { mutatedBytes, type FuzzTarget } from '../target.ts';

const AUDIO_LEVEL = 'urn:ietf:params:rtp-hdrext:ssrc-audio-level';
const TWCC = 'http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01';
const RIDS = ['', 'q', 'h', 'f'];

function rtp(seq: number, ts: number, ssrc: number, pt: number, payload: number[], ext: { id: number; payload: Buffer }[]): Uint8Array {
  return new RtpPacket(new RtpHeader({ sequenceNumber: seq, timestamp: ts, ssrc, payloadType: pt, marker: true, extensions: ext, extension: ext.length > 0 }), Buffer.from(payload)).serialize();
}

const RTP_CORPUS = [
  rtp(1, 960, 0x1111, 111, [0xfc, 0xff, 0xfe], [{ id: 1, payload: Buffer.from([0x85]) }]),
  rtp(100, 9000, 0x2222, 96, [0x90, 0x80, 0x81, 0x23, 0x10, 0x9d, 0x01, 0x2a], [{ id: 3, payload: Buffer.from([0, 1]) }]),
  rtp(101, 12000, 0x2222, 96, [0x90, 0x80, 0x81, 0x24, 0x11, 0, 0], []),
  rtp(102, 12000, 0x2222, 96, [0x80, 0x80, 0x81, 0x24, 1], []),
  rtp(103, 12000, 0x2222, 96, [0x10, 0x10], []),
];
const RTCP_CORPUS = [
  new RtcpTransportLayerFeedback({ feedback: new GenericNack({ senderSsrc: 1, mediaSourceSsrc: 0x2222, lost: [100, 101, 117] }) }).serialize(),
  Buffer.from('81cd0003000000010000222200640003', 'hex'),
  Buffer.from('8fcd0005000000010000222200010003000120000001', 'hex'),
  Buffer.from('80c80006000022220000000000000000000000000000000000000000', 'hex'),
];

type Op =
  | { op: 'rtp'; rid: number; bytes: Uint8Array }
  | { op: 'rtcp'; bytes: Uint8Array }
  | { op: 'nack'; down: number; seq: number }
  | { op: 'cap'; down: number; rank: number; enabled: boolean }
  | { op: 'pli'; rid: number }
  | { op: 'time'; ms: number };

export const rtpForward: FuzzTarget<Op[]> = {
  name: 'rtp-forward',
  description: 'publisher RTP (Opus, VP8 simulcast) and RTCP (NACK, TWCC, SR) into werift parsing, the Upstream and two DownForwarders',
  async: false,
  arbitrary() {
    const generatedRtp = fc
      .record({
        seq: fc.integer({ min: 0, max: 0xffff }),
        ts: fc.integer({ min: 0, max: 0xffffffff }),
        ssrc: fc.constantFrom(0x1111, 0x2222, 0x3333, 0),
        pt: fc.integer({ min: 0, max: 127 }),
        payload: fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 40 }),
        ext: fc.array(fc.record({ id: fc.integer({ min: 1, max: 14 }), payload: fc.uint8Array({ minLength: 1, maxLength: 16 }).map((b) => Buffer.from(b)) }), { maxLength: 3 }),
      })
      .map((p) => rtp(p.seq, p.ts, p.ssrc, p.pt, p.payload, p.ext));
    const op: fc.Arbitrary<Op> = fc.oneof(
      { weight: 6, arbitrary: fc.record({ op: fc.constant('rtp' as const), rid: fc.integer({ min: 0, max: 3 }), bytes: fc.oneof(mutatedBytes(RTP_CORPUS), generatedRtp, fc.uint8Array({ maxLength: 64 })) }) },
      { weight: 2, arbitrary: fc.record({ op: fc.constant('rtcp' as const), bytes: fc.oneof(mutatedBytes(RTCP_CORPUS), fc.uint8Array({ maxLength: 64 })) }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('nack' as const), down: fc.integer({ min: 0, max: 1 }), seq: fc.integer({ min: 0, max: 0xffff }) }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('cap' as const), down: fc.integer({ min: 0, max: 1 }), rank: fc.integer({ min: -1, max: 4 }), enabled: fc.boolean() }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('pli' as const), rid: fc.integer({ min: 0, max: 3 }) }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('time' as const), ms: fc.integer({ min: 0, max: 5000 }) }) },
    );
    return fc.array(op, { minLength: 1, maxLength: 12 });
  },
  async setup() {
    // As the werift transport factory does before any media arrives.
    installRtpHeaderGuard();
    let now = 1_000;
    let forwarded = 0;
    let parsed = 0;
    const make = (kind: 'audio' | 'video', mimeType: string) => {
      const up = new Upstream({
        kind,
        mimeType,
        clockRate: kind === 'video' ? 90000 : 48000,
        now: () => now,
        sendPli: () => {},
        extensionUri: (id) => ({ 1: AUDIO_LEVEL, 5: TWCC })[id],
        logger: createSilentLogger(),
      });
      const downs = [0, 1].map(() => {
        const d = new DownForwarder(up, { ready: () => true, send: () => forwarded++, extensionId: (uri) => (uri === AUDIO_LEVEL ? 7 : undefined) });
        up.attach(d);
        return d;
      });
      return { up, downs };
    };
    let tracks = [make('video', 'video/VP8'), make('audio', 'audio/opus')];
    const twcc = new TwccFeedback({ senderSsrc: 1 });
    let n = 0;
    return {
      one(ops) {
        if (++n % 5000 === 0) {
          for (const t of tracks) t.up.close();
          tracks = [make('video', 'video/VP8'), make('audio', 'audio/opus')];
        }
        for (const o of ops) {
          const t = tracks[n & 1]!;
          switch (o.op) {
            case 'rtp': {
              let packet: RtpPacket;
              try {
                packet = RtpPacket.deSerialize(Buffer.from(o.bytes));
              } catch {
                continue; // werift refuses it; the transport drops the datagram
              }
              parsed++;
              t.up.onPacket(RIDS[o.rid]!, packet);
              const ext = packet.header.extensions.find((e) => e.id === 5);
              const twccSeq = ext ? transportSequenceNumber(ext.payload) : undefined;
              if (twccSeq !== undefined && twcc.onPacket(twccSeq, now * 1000, packet.header.ssrc)) twcc.build(now * 1000);
              break;
            }
            case 'rtcp': {
              let packets;
              try {
                packets = RtcpPacketConverter.deSerialize(Buffer.from(o.bytes));
              } catch {
                continue;
              }
              for (const p of packets) {
                if (p instanceof RtcpTransportLayerFeedback && p.feedback instanceof GenericNack) {
                  for (const seq of nackedSequenceNumbers(p.feedback).slice(0, 64)) t.downs[0]!.retransmit(seq);
                }
              }
              break;
            }
            case 'nack':
              t.downs[o.down]!.retransmit(o.seq);
              break;
            case 'cap':
              t.downs[o.down]!.setMaxRank(o.rank);
              t.downs[o.down]!.setEnabled(o.enabled);
              break;
            case 'pli':
              t.up.requestKeyframe(RIDS[o.rid]);
              break;
            case 'time':
              now += o.ms;
              break;
          }
        }
      },
      expected: () => false,
      async teardown() {
        for (const t of tracks) t.up.close();
      },
      stats: () => ({ parsed, forwarded }),
    };
  },
};
