/**
 * Subscriber feedback: which sequence numbers a generic NACK
 * really asks for (werift's parser reads past the packet and does not wrap at 16 bits), and how
 * often a NACKed packet is sent again (and that the history for it costs nothing until a NACK).
 */
import { describe, expect, it } from 'vitest';
import {
  GenericNack,
  RTCRtpCodecParameters,
  RTCRtpSender,
  RtcpHeader,
  RtcpTransportLayerFeedback,
  RtpHeader,
  RtpPacket,
  type RTCDtlsTransport,
} from 'werift';
import { createSilentLogger } from '../../common/logger.ts';
import type { DownForwarder } from './forwarder.ts';
import { ReceiverReportState } from './link-stats.ts';
import { NackGuard, nackedSequenceNumbers, takeOverSenderFeedback } from './sender-feedback.ts';

const nack = (lost: number[], length?: number) =>
  new GenericNack({ senderSsrc: 1, mediaSourceSsrc: 2, lost, ...(length !== undefined ? { header: new RtcpHeader({ length }) } : {}) });

describe('nackedSequenceNumbers', () => {
  it.each([
    ['one FCI entry, garbage after it ignored', nack([100, 36814, 36815, 0, 1], 3), [100]],
    ['one entry with its bitmask', nack([100, 101, 103, 116, 5000], 3), [100, 101, 103, 116]],
    ['two entries', nack([100, 102, 300, 301, 9], 4), [100, 102, 300, 301]],
    ['wraps pid + n at 16 bits', nack([65535, 65536, 65537], 3), [65535, 0, 1]],
    ['no header: everything', nack([7, 9000]), [7, 9000]],
  ])('%s', (_name, packet, expected) => {
    expect(nackedSequenceNumbers(packet)).toEqual(expected);
  });
});

describe('retransmissions for NACKs (LiveKit: repeats within 100 ms ignored, at most 3 per packet)', () => {
  it('answers a repeated NACK only after 100 ms, and a packet at most 3 times', () => {
    const sender = new RTCRtpSender('video');
    sender.codec = new RTCRtpCodecParameters({ mimeType: 'video/VP8', clockRate: 90000, payloadType: 96 });
    const sent: number[] = [];
    // Stand-ins for the subscriber's DTLS transport and the downtrack's cache: record what goes out.
    sender.dtlsTransport = {
      sendRtp: async (_payload: Buffer, header: RtpHeader) => {
        sent.push(header.sequenceNumber);
        return 0;
      },
    } as unknown as RTCDtlsTransport;
    const forwarder = {
      retransmit: (seq: number) => new RtpPacket(new RtpHeader({ sequenceNumber: seq }), Buffer.alloc(10)),
      requestKeyframe: () => undefined,
    } as unknown as DownForwarder;
    let now = 1_000;
    takeOverSenderFeedback({
      sender,
      forwarder,
      counts: { nacks: 0, keyframeRequests: 0 },
      metrics: undefined,
      log: createSilentLogger(),
      connected: () => true,
      reports: new ReceiverReportState(),
      kind: 'video',
      wallNow: () => now,
      onEstimate: () => undefined,
    });
    const nackOf = (lost: number[]) =>
      sender.handleRtcpPacket(
        new RtcpTransportLayerFeedback({ feedback: new GenericNack({ senderSsrc: 1, mediaSourceSsrc: sender.ssrc, lost }) }),
      );

    nackOf([10, 11]);
    expect(sent).toEqual([10, 11]);
    now += 50;
    nackOf([10, 10, 10]);
    expect(sent).toEqual([10, 11]); // within 100 ms of its retransmission
    now += 60;
    nackOf([10]);
    now += 100;
    nackOf([10]);
    now += 100;
    nackOf([10, 11]);
    expect(sent).toEqual([10, 11, 10, 10, 11]); // 10 sent 3 times, then no more; 11 again after 100 ms
  });
});

describe('NackGuard memory', () => {
  it('holds no history until the first NACK, then a fixed amount whatever is NACKed', () => {
    const guard = new NackGuard();
    expect(guard.allocatedBytes).toBe(0);
    expect(guard.allow(7, 1_000)).toBe(true);
    const held = guard.allocatedBytes;
    expect(held).toBeGreaterThan(0);
    for (let seq = 0; seq < 70_000; seq += 3) guard.allow(seq & 0xffff, 2_000);
    expect(guard.allocatedBytes).toBe(held);
  });
});
