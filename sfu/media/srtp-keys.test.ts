/**
 * Prepared SRTP keys change nothing on the wire: for both profiles werift negotiates, packets
 * protected with KeyObject keys are byte-identical to werift's own and decrypt on an unprepared
 * peer (and the reverse); on two real werift peers over loopback the keys end up prepared and
 * media still flows.
 */
import { randomBytes, KeyObject } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import {
  MediaStreamTrack,
  ProtectionProfileAeadAes128Gcm,
  ProtectionProfileAes128CmHmacSha1_80,
  RTCPeerConnection,
  RtpHeader,
  RtpPacket,
  SrtcpSession,
  SrtpSession,
  useOPUS,
} from 'werift';
import { createSilentLogger } from '../../common/logger.ts';
import { prepareCipherKeys, useKeyObjectsForSrtp } from './srtp-keys.ts';

type Profile = typeof ProtectionProfileAeadAes128Gcm | typeof ProtectionProfileAes128CmHmacSha1_80;

interface Contexts {
  localContext: { cipher: Parameters<typeof prepareCipherKeys>[0] };
  remoteContext: { cipher: Parameters<typeof prepareCipherKeys>[0] };
}

function sessionPair(profile: Profile) {
  const a = { key: randomBytes(16), salt: randomBytes(profile === ProtectionProfileAeadAes128Gcm ? 12 : 14) };
  const b = { key: randomBytes(16), salt: randomBytes(a.salt.length) };
  const config = (local: typeof a, remote: typeof a) => ({
    keys: { localMasterKey: local.key, localMasterSalt: local.salt, remoteMasterKey: remote.key, remoteMasterSalt: remote.salt },
    profile,
  });
  const make = (local: typeof a, remote: typeof a) => ({
    srtp: new SrtpSession(config(local, remote)),
    srtcp: new SrtcpSession(config(local, remote)),
  });
  return { plainA: make(a, b), preparedA: make(a, b), plainB: make(b, a) };
}

function prepare(session: unknown): void {
  const s = session as Contexts;
  expect(prepareCipherKeys(s.localContext.cipher)).toBe(true);
  expect(prepareCipherKeys(s.remoteContext.cipher)).toBe(true);
}

const rtcpReceiverReport = Buffer.from('81c900070000abcd12345678' + '00000000'.repeat(5), 'hex');

describe('prepared SRTP keys', () => {
  it.each([
    ['AEAD_AES_128_GCM', ProtectionProfileAeadAes128Gcm],
    ['AES_CM_128_HMAC_SHA1_80', ProtectionProfileAes128CmHmacSha1_80],
  ] as const)('%s: same bytes as werift, decryptable both ways', (_name, profile) => {
    const { plainA, preparedA, plainB } = sessionPair(profile);
    prepare(preparedA.srtp);
    prepare(preparedA.srtcp);
    expect((preparedA.srtp as unknown as Contexts).localContext.cipher?.srtpSessionKey).toBeInstanceOf(KeyObject);

    for (let i = 0; i < 5; i++) {
      const payload = randomBytes(40 + i * 50);
      const header = () => new RtpHeader({ payloadType: 111, sequenceNumber: (65533 + i) & 0xffff, timestamp: 960 * i, ssrc: 0xabcd });
      const theirs = plainA.srtp.encrypt(payload, header());
      const ours = preparedA.srtp.encrypt(payload, header());
      expect(ours.equals(theirs)).toBe(true);
      expect(RtpPacket.deSerialize(plainB.srtp.decrypt(ours)).payload.equals(payload)).toBe(true);
      // And the prepared side decrypts what an unprepared peer sends.
      const fromB = plainB.srtp.encrypt(payload, header());
      expect(RtpPacket.deSerialize(preparedA.srtp.decrypt(fromB)).payload.equals(payload)).toBe(true);
    }
    const rtcpTheirs = plainA.srtcp.encrypt(rtcpReceiverReport);
    const rtcpOurs = preparedA.srtcp.encrypt(rtcpReceiverReport);
    expect(rtcpOurs.equals(rtcpTheirs)).toBe(true);
    expect(plainB.srtcp.decrypt(rtcpOurs).equals(rtcpReceiverReport)).toBe(true);
    expect(preparedA.srtcp.decrypt(plainB.srtcp.encrypt(rtcpReceiverReport)).equals(rtcpReceiverReport)).toBe(true);
  });

  it('leaves a cipher of an unknown shape alone', () => {
    expect(prepareCipherKeys(undefined)).toBe(false);
    const odd = { srtpSessionKey: 'not a buffer' as unknown as Buffer };
    expect(prepareCipherKeys(odd)).toBe(false);
    expect(odd.srtpSessionKey).toBe('not a buffer');
  });
});

describe('useKeyObjectsForSrtp on real werift peers', () => {
  const pcs: RTCPeerConnection[] = [];
  afterEach(async () => {
    await Promise.all(pcs.splice(0).map((pc) => pc.close()));
  });

  it('prepares both directions once connected, and RTP still flows', async () => {
    const config = { codecs: { audio: [useOPUS()] }, iceServers: [], iceInterfaceAddresses: { udp4: '127.0.0.1' } };
    const sender = new RTCPeerConnection(config);
    const receiver = new RTCPeerConnection(config);
    pcs.push(sender, receiver);
    const hooked = new WeakSet<object>();
    const log = createSilentLogger();
    const track = new MediaStreamTrack({ kind: 'audio' });
    sender.addTransceiver(track, { direction: 'sendonly' });
    const received = new Promise<Buffer>((resolve) => {
      receiver.onTrack.subscribe((remote) => remote.onReceiveRtp.subscribe((rtp) => resolve(rtp.payload)));
    });
    await sender.setLocalDescription(await sender.createOffer());
    useKeyObjectsForSrtp(sender, hooked, log);
    await receiver.setRemoteDescription(sender.localDescription!);
    await receiver.setLocalDescription(await receiver.createAnswer());
    useKeyObjectsForSrtp(receiver, hooked, log);
    await sender.setRemoteDescription(receiver.localDescription!);

    const payload = Buffer.from('prepared keys, same packets');
    const deadline = Date.now() + 10_000;
    const seen: { payload?: Buffer } = {};
    void received.then((p) => (seen.payload = p));
    for (let seq = 1; !seen.payload && Date.now() < deadline; seq++) {
      if (sender.connectionState === 'connected') {
        track.writeRtp(new RtpPacket(new RtpHeader({ payloadType: 111, sequenceNumber: seq, timestamp: seq * 960 }), payload));
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(seen.payload?.equals(payload)).toBe(true);
    for (const pc of [sender, receiver]) {
      const dtls = pc.dtlsTransports[0] as unknown as { srtp: Contexts; srtcp: Contexts };
      expect(dtls.srtp.localContext.cipher?.srtpSessionKey).toBeInstanceOf(KeyObject);
      expect(dtls.srtp.remoteContext.cipher?.srtpSessionKey).toBeInstanceOf(KeyObject);
      expect(dtls.srtcp.localContext.cipher?.srtcpSessionKey).toBeInstanceOf(KeyObject);
    }
  });
});
