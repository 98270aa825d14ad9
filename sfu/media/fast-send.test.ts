/**
 * The forwarding send path on real werift peers over loopback: packets arrive intact with the
 * sender's mid and a correct abs-send-time, sender reports carry the real NTP time of the last
 * packet (werift's own path keeps whole seconds only), and it declines when it must.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  MediaStreamTrack,
  RTCPeerConnection,
  RTP_EXTENSION_URI,
  RtcpSrPacket,
  RtpHeader,
  RtpPacket,
  useAbsSendTime,
  useOPUS,
  useSdesMid,
  type RTCRtpSender,
  type RtcpPacket,
} from 'werift';
import { createSilentLogger } from '../../common/logger.ts';
import { absSendTime, createFastSend, ntpFromUnixMs } from './fast-send.ts';

describe('time formats', () => {
  it('NTP time of a Unix time: seconds since 1900 and a 32-bit fraction', () => {
    expect(ntpFromUnixMs(0)).toBe(2_208_988_800n << 32n);
    expect(ntpFromUnixMs(1500)).toBe((2_208_988_801n << 32n) | 0x8000_0000n);
    expect(ntpFromUnixMs(250)).toBe((2_208_988_800n << 32n) | 0x4000_0000n);
  });

  it('abs-send-time: 6.18 fixed-point seconds, 24 bits', () => {
    // 2208988800 s = ...0x00 in the low 6 bits? 2208988800 % 64 = 0, so 1.5 s → 1.5 * 2^18.
    expect(absSendTime(1500).readUIntBE(0, 3)).toBe(1.5 * 262_144);
    expect(absSendTime(64_000 + 250).readUIntBE(0, 3)).toBe(0.25 * 262_144);
  });
});

const packet = (seq: number) =>
  new RtpPacket(new RtpHeader({ payloadType: 96, sequenceNumber: seq, timestamp: seq * 960, ssrc: 1 }), Buffer.from(`opus ${seq}`));

async function until(what: string, cond: () => boolean, tick: () => void, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    tick();
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('createFastSend on real werift peers', () => {
  const pcs: RTCPeerConnection[] = [];
  afterEach(async () => {
    await Promise.all(pcs.splice(0).map((pc) => pc.close()));
  });

  async function connectedPair() {
    const config = {
      codecs: { audio: [useOPUS()] },
      headerExtensions: { audio: [useSdesMid(), useAbsSendTime()] },
      iceServers: [],
      iceInterfaceAddresses: { udp4: '127.0.0.1' },
    };
    const sending = new RTCPeerConnection(config);
    const receiving = new RTCPeerConnection(config);
    pcs.push(sending, receiving);
    const transceiver = sending.addTransceiver(new MediaStreamTrack({ kind: 'audio' }), { direction: 'sendonly' });
    const packets: RtpPacket[] = [];
    const reports: RtcpSrPacket[] = [];
    receiving.onTrack.subscribe((track) => track.onReceiveRtp.subscribe((rtp) => packets.push(rtp)));
    await sending.setLocalDescription(await sending.createOffer());
    await receiving.setRemoteDescription(sending.localDescription!);
    await receiving.setLocalDescription(await receiving.createAnswer());
    await sending.setRemoteDescription(receiving.localDescription!);
    receiving.dtlsTransports[0]!.onRtcp.subscribe((rtcp: RtcpPacket) => {
      if (rtcp instanceof RtcpSrPacket) reports.push(rtcp);
    });
    return { sending, receiving, sender: transceiver.sender, packets, reports };
  }

  it('sends intact packets with mid and abs-send-time, and sender reports with the real NTP time', async () => {
    const { sender, packets, reports, receiving } = await connectedPair();
    const wallClock = Date.UTC(2026, 10, 21, 12, 0, 0, 375);
    const send = createFastSend(sender, createSilentLogger(), () => wallClock);
    let seq = 1;
    const sent: boolean[] = [];
    // Until the transport is up it declines (the caller would use werift's path).
    await until('a report', () => reports.length > 0 && packets.length > 5, () => sent.push(send(packet(seq++))), 15_000);
    expect(sent.at(-1)).toBe(true);

    const got = packets.at(-1)!;
    expect(got.payload.toString()).toMatch(/^opus \d+$/);
    expect(got.header.ssrc).toBe(sender.ssrc);
    const uri = (id: number) => receiving.getTransceivers()[0]!.headerExtensions.find((e) => e.id === id)?.uri;
    const ext = new Map(got.header.extensions.map((e) => [uri(e.id), e.payload]));
    expect(ext.get(RTP_EXTENSION_URI.sdesMid)?.toString()).toBe(receiving.getTransceivers()[0]!.mid);
    expect(ext.get(RTP_EXTENSION_URI.absSendTime)?.equals(absSendTime(wallClock))).toBe(true);

    const info = reports.at(-1)!.senderInfo;
    expect(info.ntpTimestamp).toBe(ntpFromUnixMs(wallClock));
    expect(info.packetCount).toBeGreaterThan(0);
  });

  it('declines before the transport is connected and for a sender of an unknown shape', async () => {
    const { sender } = await connectedPair();
    const send = createFastSend(sender, createSilentLogger());
    // Not connected yet (no wait above): werift's own path must be used.
    expect(send(packet(1))).toBe(false);
    const odd = createFastSend({ codec: undefined } as unknown as RTCRtpSender, createSilentLogger());
    expect(odd(packet(1))).toBe(false);
  });
});
