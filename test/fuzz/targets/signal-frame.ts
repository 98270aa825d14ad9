/**
 * Signalling frames into a participant of a real room (sfu/rtc) with real werift transports:
 * each case is one WebSocket frame, decoded as sfu/signal/signalling.ts decodes it (protobuf,
 * or protojson for text frames), then handled by the participant session. Inputs: valid
 * requests of every kind (offer with a real werift-made SDP, answer, trickle, add_track, mute,
 * subscription, track settings, metadata, ping, leave) mutated as bytes, generated requests
 * with hostile strings and numbers, and arbitrary bytes. An unparseable frame is answered by
 * ignoring it; anything thrown by the session, or a promise it leaves rejected, is a crash. The
 * participant is replaced every 1,000 cases and whenever a case ends its session.
 */
import fc from 'fast-check';
import {
  AddTrackRequest,
  LeaveRequest,
  MuteTrackRequest,
  Ping,
  SessionDescription,
  SignalRequest,
  SignalTarget,
  SimulateScenario,
  TrackType,
  TrickleRequest,
  UpdateParticipantMetadata,
  UpdateSubscription,
  UpdateTrackSettings,
} from '@livekit/protocol';
import { RTCPeerConnection } from 'werift';
import { systemClock } from '../../../common/clock.ts';
import { createSilentLogger } from '../../../common/logger.ts';
import { parseSfuConfig } from '../../../sfu/config.ts';
import { createWeriftTransportFactory } from '../../../sfu/media/transport.ts';
import { permissionsOf } from '../../../sfu/signal/auth.ts';
import { createRoomManager, type ParticipantSession } from '../../../sfu/rtc/room-manager.ts';
import type { JoinRequest } from '../../../sfu/rtc/types.ts';
import { mutatedBytes, type FuzzTarget } from '../target.ts';

async function weriftOffer(): Promise<string> {
  const pc = new RTCPeerConnection({});
  pc.addTransceiver('audio', { direction: 'sendonly' });
  pc.addTransceiver('video', { direction: 'sendonly' });
  pc.createDataChannel('_reliable');
  const offer = await pc.createOffer();
  await pc.close();
  return offer.sdp;
}

function corpus(sdp: string): SignalRequest[] {
  const r = (message: SignalRequest['message']) => new SignalRequest({ message });
  return [
    r({ case: 'offer', value: new SessionDescription({ type: 'offer', sdp, id: 1 }) }),
    r({ case: 'answer', value: new SessionDescription({ type: 'answer', sdp: sdp.replace(/sendonly/g, 'recvonly'), id: 1 }) }),
    r({ case: 'trickle', value: new TrickleRequest({ target: SignalTarget.PUBLISHER, candidateInit: JSON.stringify({ candidate: 'candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host', sdpMid: '0', sdpMLineIndex: 0 }) }) }),
    r({ case: 'trickle', value: new TrickleRequest({ target: SignalTarget.SUBSCRIBER, candidateInit: 'null' }) }),
    r({ case: 'addTrack', value: new AddTrackRequest({ cid: 'mic', name: 'microphone', type: TrackType.AUDIO, source: 2 }) }),
    r({ case: 'addTrack', value: new AddTrackRequest({ cid: 'cam', name: 'camera', type: TrackType.VIDEO, width: 1280, height: 720, simulcastCodecs: [{ codec: 'vp8', cid: 'cam' }] }) }),
    r({ case: 'mute', value: new MuteTrackRequest({ sid: 'TR_x', muted: true }) }),
    r({ case: 'subscription', value: new UpdateSubscription({ trackSids: ['TR_x'], subscribe: true }) }),
    r({ case: 'trackSetting', value: new UpdateTrackSettings({ trackSids: ['TR_x'], disabled: false, width: 320, height: 180, fps: 15 }) }),
    r({ case: 'updateMetadata', value: new UpdateParticipantMetadata({ name: 'n', metadata: 'm', attributes: { a: 'b' } }) }),
    r({ case: 'pingReq', value: new Ping({ timestamp: 1n, rtt: 1n }) }),
    r({ case: 'ping', value: 1n }),
    r({ case: 'simulate', value: new SimulateScenario({ scenario: { case: 'nodeFailure', value: true } }) }),
    r({ case: 'leave', value: new LeaveRequest({ canReconnect: false }) }),
  ];
}

type Input = { text: boolean; bytes: Uint8Array };

export const signalFrame: FuzzTarget<Input> = {
  name: 'signal-frame',
  description: 'LiveKit signalling frames (protobuf and JSON, every request kind, real werift offers) into a participant session of a real room',
  async: true,
  arbitrary() {
    throw new Error('signal-frame: the arbitrary is built by setup() (it needs a werift offer)');
  },
  async setup() {
    const sdp = await weriftOffer();
    const reqs = corpus(sdp);
    const binary = reqs.map((q) => q.toBinary());
    const json = reqs.map((q) => Buffer.from(q.toJsonString()));
    const hostile = fc.oneof(fc.string({ maxLength: 64 }), fc.constantFrom('', 'null', '{}', '[]', '\u0000', 'a'.repeat(5000)));
    const generated = fc
      .record({ kind: fc.constantFrom('mute', 'trackSetting', 'subscription', 'updateMetadata', 'trickle', 'addTrack'), s: hostile, n: fc.integer(), b: fc.boolean() })
      .map(({ kind, s, n, b }) => {
        const m: Record<string, SignalRequest['message']> = {
          mute: { case: 'mute', value: new MuteTrackRequest({ sid: s, muted: b }) },
          trackSetting: { case: 'trackSetting', value: new UpdateTrackSettings({ trackSids: [s], disabled: b, width: n >>> 0, height: n >>> 0, quality: n & 3 }) },
          subscription: { case: 'subscription', value: new UpdateSubscription({ trackSids: [s, s], subscribe: b }) },
          updateMetadata: { case: 'updateMetadata', value: new UpdateParticipantMetadata({ name: s, metadata: s, attributes: { [s]: s } }) },
          trickle: { case: 'trickle', value: new TrickleRequest({ target: n & 1, candidateInit: s }) },
          addTrack: { case: 'addTrack', value: new AddTrackRequest({ cid: s, name: s, type: n & 3, width: n >>> 0 }) },
        };
        return new SignalRequest({ message: m[kind]! }).toBinary();
      });
    const arbitrary: fc.Arbitrary<Input> = fc.oneof(
      { weight: 3, arbitrary: fc.record({ text: fc.constant(false), bytes: mutatedBytes(binary) }) },
      { weight: 2, arbitrary: fc.record({ text: fc.constant(true), bytes: mutatedBytes(json) }) },
      { weight: 3, arbitrary: fc.record({ text: fc.constant(false), bytes: generated }) },
      { weight: 1, arbitrary: fc.record({ text: fc.boolean(), bytes: fc.uint8Array({ maxLength: 256 }) }) },
    );

    const config = parseSfuConfig({ keys: { fuzzkey: 'fuzz-secret-0123456789abcdef-0123456789' }, rtc: { node_ip: '127.0.0.1', port_range_start: 42000, port_range_end: 42200 }, room: { auto_create: true } }, 'fuzz');
    const logger = createSilentLogger();
    const transportFactory = createWeriftTransportFactory({ config: { portRange: [42000, 42200], nodeIp: '127.0.0.1' }, logger, clock: systemClock });
    const rooms = createRoomManager({ config, logger, clock: systemClock, transportFactory });
    const rejections: unknown[] = [];
    const onRejection = (err: unknown) => rejections.push(err);
    process.on('unhandledRejection', onRejection);

    let session: ParticipantSession | undefined;
    let ended = true;
    let joined = 0;
    let parsed = 0;
    let n = 0;
    const join = () => {
      const req: JoinRequest = {
        room: 'fuzz-room',
        identity: `fuzzer-${joined++}`,
        name: 'fuzzer',
        metadata: '',
        attributes: {},
        permissions: permissionsOf({ roomJoin: true, room: 'fuzz-room', canUpdateOwnMetadata: true }),
        autoSubscribe: true,
        clientInfo: { sdk: 'JS', version: 'fuzz', protocol: 15, os: '', osVersion: '', deviceModel: '', browser: '', browserVersion: '', address: '127.0.0.1', network: '' } as never,
        issuedAt: Math.floor(Date.now() / 1000),
      };
      ended = false;
      session = rooms.join(req, { send: () => {}, close: () => (ended = true) });
    };
    const leave = () => {
      if (session && !ended) session.handleDisconnect();
      session = undefined;
      ended = true;
    };
    return {
      arbitrary,
      async one({ text, bytes }) {
        if (ended || ++n % 1000 === 0) {
          leave();
          join();
        }
        let req: SignalRequest;
        try {
          req = text ? SignalRequest.fromJsonString(Buffer.from(bytes).toString('utf8'), { ignoreUnknownFields: true }) : SignalRequest.fromBinary(bytes);
        } catch {
          return; // signalling.ts ignores an unparseable frame
        }
        parsed++;
        session!.handleRequest(req);
        await new Promise<void>((r) => setImmediate(r));
        if (rejections.length) throw rejections.shift();
      },
      expected: () => false,
      async teardown() {
        leave();
        for (const r of await rooms.listRooms([])) await rooms.deleteRoom(r.name);
        await new Promise<void>((r) => setTimeout(r, 200));
        process.off('unhandledRejection', onRejection);
      },
      stats: () => ({ parsed, participants: joined }),
    };
  },
};

