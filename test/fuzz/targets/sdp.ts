/**
 * SDP offers and answers into the SFU's SDP path: our linear pre-check (sfu/rtc/limits.ts
 * `sdpProblem`, which decides whether werift's parser may see the text at all), then werift's
 * parser as the transport uses it, then our own m-section reader (sfu/media/sdp.ts). Inputs:
 * werift-made offers (audio, video with simulcast, data channel) mutated line by line and byte
 * by byte, generated SDP built from hostile lines (many `a=ssrc`, huge `a=` values, m-lines
 * without attributes), and random text. werift refusing an SDP is expected (the transport
 * answers with an error); our code throwing is a crash, and a case slower than the stall bound
 * (werift's parser has quadratic corners) is a stall.
 */
import fc from 'fast-check';
import { RTCPeerConnection, SessionDescription } from 'werift';
import { parseSfuConfig } from '../../../sfu/config.ts';
import { parseMediaSections, remoteSends } from '../../../sfu/media/sdp.ts';
import { sdpProblem } from '../../../sfu/rtc/limits.ts';
import { mutatedText, type FuzzTarget } from '../target.ts';

async function offers(): Promise<string[]> {
  const out: string[] = [];
  const pc = new RTCPeerConnection({});
  pc.addTransceiver('audio', { direction: 'sendonly' });
  pc.addTransceiver('video', { direction: 'sendonly' });
  pc.createDataChannel('_reliable');
  out.push((await pc.createOffer()).sdp);
  await pc.close();
  const rx = new RTCPeerConnection({});
  rx.addTransceiver('video', { direction: 'recvonly' });
  out.push((await rx.createOffer()).sdp);
  await rx.close();
  return out;
}

type Input = string;

export const sdp: FuzzTarget<Input> = {
  name: 'sdp',
  description: "SDP offers and answers through the SFU's pre-check, werift's parser and our m-section reader",
  async: false,
  arbitrary() {
    throw new Error('sdp: the arbitrary is built by setup() (it needs werift offers)');
  },
  async setup() {
    const corpus = await offers();
    const limits = parseSfuConfig({ keys: { fuzzkey: 'fuzz-secret-0123456789abcdef-0123456789' } }, 'fuzz').signal_limits;
    const line = fc.oneof(
      fc.constantFrom('m=audio 9 UDP/TLS/RTP/SAVPF 111', 'm=video 9 UDP/TLS/RTP/SAVPF 96 97', 'm=application 9 UDP/DTLS/SCTP webrtc-datachannel', 'a=sendrecv', 'a=recvonly', 'a=inactive', 'a=rtcp-mux', 'a=setup:actpass', 'a=group:BUNDLE 0 1 2'),
      fc.tuple(fc.nat(), fc.string({ maxLength: 20 })).map(([n, s]) => `a=ssrc:${n} cname:${s}`),
      fc.tuple(fc.nat({ max: 20 }), fc.string({ maxLength: 20 })).map(([n, s]) => `a=mid:${n}${s}`),
      fc.tuple(fc.integer({ min: 0, max: 127 }), fc.string({ maxLength: 30 })).map(([pt, s]) => `a=rtpmap:${pt} ${s}`),
      fc.tuple(fc.constantFrom('rid', 'simulcast', 'extmap', 'fmtp', 'rtcp-fb', 'msid', 'ice-ufrag', 'fingerprint', 'candidate'), fc.string({ maxLength: 60 })).map(([k, v]) => `a=${k}:${v}`),
      fc.string({ maxLength: 80 }),
    );
    const generated = fc
      .tuple(fc.constantFrom(...corpus), fc.array(fc.tuple(fc.nat(), line), { maxLength: 40 }), fc.constantFrom('\r\n', '\n'))
      .map(([base, inserts, eol]) => {
        const lines = base.split(/\r?\n/);
        for (const [at, l] of inserts) lines.splice(at % (lines.length + 1), 0, l);
        return lines.join(eol);
      });
    const arbitrary: fc.Arbitrary<Input> = fc.oneof(
      { weight: 4, arbitrary: generated },
      { weight: 3, arbitrary: mutatedText(corpus) },
      { weight: 1, arbitrary: fc.string({ maxLength: 400 }) },
    );
    let parsedByWerift = 0;
    let refusedEarly = 0;
    return {
      arbitrary,
      one(text) {
        if (sdpProblem(limits, text)) {
          refusedEarly++;
          return;
        }
        try {
          SessionDescription.parse(text);
          parsedByWerift++;
        } catch {
          // werift refuses it: the transport answers the offer with an error.
        }
        for (const section of parseMediaSections(text)) remoteSends(section);
      },
      expected: () => false,
      async teardown() {},
      stats: () => ({ parsedByWerift, refusedEarly }),
    };
  },
};
