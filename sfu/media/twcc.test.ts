import { describe, expect, it } from 'vitest';
import { RtcpPacketConverter, RtcpTransportLayerFeedback, TransportWideCC, type RunLengthChunk } from 'werift';
import { TwccFeedback } from './twcc.ts';

/** Parses our feedback with werift's RTCP parser; returns per-sequence received flags and deltas (µs). */
function decode(buf: Buffer): { base: number; count: number; reference: number; statuses: number[]; deltasUs: number[]; fb: number } {
  const [packet] = RtcpPacketConverter.deSerialize(buf);
  expect(packet).toBeInstanceOf(RtcpTransportLayerFeedback);
  const fb = (packet as RtcpTransportLayerFeedback).feedback as TransportWideCC;
  expect(fb).toBeInstanceOf(TransportWideCC);
  const statuses: number[] = [];
  for (const chunk of fb.packetChunks as RunLengthChunk[]) {
    for (let i = 0; i < chunk.runLength; i++) statuses.push(chunk.packetStatus);
  }
  expect(buf.length % 4).toBe(0);
  return {
    base: fb.baseSequenceNumber,
    count: fb.packetStatusCount,
    reference: fb.referenceTime,
    statuses,
    deltasUs: fb.recvDeltas.map((d) => d.delta),
    fb: fb.fbPktCount,
  };
}

describe('TWCC feedback', () => {
  it('reports every packet since the last feedback with arrival deltas relative to the reference time', () => {
    const twcc = new TwccFeedback({ senderSsrc: 1 });
    const t0 = 10_000_000; // µs; 156.25 reference units: the first delta carries the remainder
    expect(twcc.onPacket(100, t0, 42)).toBe(false);
    twcc.onPacket(101, t0 + 1000, 42);
    twcc.onPacket(102, t0 + 1000 + 80_000, 42); // large delta
    const fb = decode(twcc.build(t0 + 90_000)!);
    expect(fb.base).toBe(100);
    expect(fb.count).toBe(3);
    expect(fb.reference).toBe(Math.floor(t0 / 64_000));
    expect(fb.statuses).toEqual([1, 1, 2]);
    expect(fb.deltasUs).toEqual([t0 - fb.reference * 64_000, 1000, 80_000]);
    expect(fb.fb).toBe(0);
    expect(twcc.pending).toBe(0);
  });

  it('reports gaps as not received, handles reordering and sequence wrap, and continues where the last feedback ended', () => {
    const twcc = new TwccFeedback({ senderSsrc: 1 });
    const t0 = 5_000_000;
    twcc.onPacket(65534, t0, 7);
    twcc.onPacket(1, t0 + 2000, 7); // 65535 and 0 lost (or on another m-line, still missing)
    twcc.onPacket(0, t0 + 2500, 7); // reordered: arrived after 1
    const first = decode(twcc.build(t0 + 3000)!);
    expect(first.base).toBe(65534);
    expect(first.count).toBe(4);
    expect(first.statuses).toEqual([1, 0, 1, 2]);
    expect(first.deltasUs.slice(1)).toEqual([2500, -500]);
    twcc.onPacket(2, t0 + 4000, 7);
    const second = decode(twcc.build(t0 + 5000)!);
    expect(second.base).toBe(2);
    expect(second.count).toBe(1);
    expect(second.fb).toBe(1);
    // A straggler from before the last feedback is not reported again.
    twcc.onPacket(65535, t0 + 6000, 7);
    expect(twcc.build(t0 + 7000)).toBeUndefined();
  });

  it('is due after the interval or when many packets wait', () => {
    const twcc = new TwccFeedback({ senderSsrc: 1, intervalUs: 50_000 });
    expect(twcc.onPacket(1, 0, 1)).toBe(false);
    expect(twcc.onPacket(2, 49_000, 1)).toBe(false);
    expect(twcc.onPacket(3, 50_000, 1)).toBe(true);
    twcc.build(50_000);
    let due = false;
    for (let i = 0; i < 120 && !due; i++) due = twcc.onPacket(4 + i, 50_001 + i, 1);
    expect(due).toBe(true);
    expect(decode(twcc.build(60_000)!).count).toBe(120);
  });
});
