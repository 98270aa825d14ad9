/**
 * Forged datagrams for a media port, as an attacker who knows nothing but the port range would
 * send them: plaintext DTLS alerts (the 15-byte packet that used to end a call), alerts at the
 * session's epoch that do not decrypt, records of unknown content type, a plaintext ClientHello,
 * fake SRTP and SRTCP, a STUN binding request with a wrong MESSAGE-INTEGRITY, and random bytes.
 * `floodPorts` sends them from a foreign loopback address (127.0.0.9 by default).
 */
import { createSocket, type Socket } from 'node:dgram';
import { createHmac, randomBytes } from 'node:crypto';

function dtlsRecord(type: number, epoch: number, fragment: Buffer): Buffer {
  const header = Buffer.alloc(13);
  header[0] = type;
  header[1] = 0xfe;
  header[2] = 0xfd;
  header.writeUInt16BE(epoch, 3);
  header.writeUIntBE(randomBytes(1)[0]!, 5, 6);
  header.writeUInt16BE(fragment.length, 11);
  return Buffer.concat([header, fragment]);
}

/** A STUN binding request with USERNAME and a MESSAGE-INTEGRITY made with a wrong key. */
function forgedBindingRequest(): Buffer {
  const username = Buffer.from('abcd:efgh');
  const padded = Buffer.alloc(Math.ceil(username.length / 4) * 4);
  username.copy(padded);
  const attrUser = Buffer.concat([Buffer.from([0x00, 0x06, 0x00, username.length]), padded]);
  const header = Buffer.alloc(20);
  header.writeUInt16BE(0x0001, 0);
  header.writeUInt32BE(0x2112a442, 4);
  randomBytes(12).copy(header, 8);
  header.writeUInt16BE(attrUser.length + 24, 2);
  const mac = createHmac('sha1', 'not-the-password').update(Buffer.concat([header, attrUser])).digest();
  const attrMi = Buffer.concat([Buffer.from([0x00, 0x08, 0x00, 0x14]), mac]);
  return Buffer.concat([header, attrUser, attrMi]);
}

/** The 15-byte plaintext DTLS warning alert (close_notify) that used to end a call. */
export function plaintextAlert(): Buffer[] {
  return [dtlsRecord(21, 0, Buffer.from([1, 0]))];
}

/** One of each kind of forged datagram (fresh random parts each call). */
export function junkDatagrams(): Buffer[] {
  const rtp = Buffer.concat([Buffer.from([0x80, 111]), randomBytes(10), randomBytes(160)]);
  const rtcp = Buffer.concat([Buffer.from([0x80, 200, 0x00, 0x06]), randomBytes(24), randomBytes(14)]);
  return [
    dtlsRecord(21, 0, Buffer.from([1, 0])), // warning close_notify, plaintext: 15 bytes
    dtlsRecord(21, 0, Buffer.from([2, 40])), // fatal handshake_failure, plaintext
    dtlsRecord(21, 1, Buffer.from([1, 0])), // "encrypted" alert that is plaintext
    dtlsRecord(21, 1, randomBytes(26)), // alert at epoch 1 that does not decrypt
    dtlsRecord(30, 0, randomBytes(8)), // unknown content type
    dtlsRecord(63, 1, randomBytes(32)), // unknown content type at epoch 1
    dtlsRecord(22, 0, Buffer.concat([Buffer.from([1, 0, 0, 40, 0, 0, 0, 0, 0, 0, 0, 40]), randomBytes(40)])), // ClientHello
    dtlsRecord(23, 1, randomBytes(64)), // application data that does not decrypt
    rtp,
    rtcp,
    forgedBindingRequest(),
    randomBytes(1 + (randomBytes(1)[0]! % 200)),
  ];
}

export interface Flooder {
  /** Datagrams sent so far. */
  readonly sent: number;
  /** Datagrams the flooded host sent back to the flooding address (STUN answers, checks). */
  readonly received: number;
  stop(): Promise<void>;
}

/**
 * Sends every junk datagram to every port in [from, to] of `host`, once per `intervalMs`, from
 * `source` until stopped.
 */
export async function floodPorts(opts: {
  host?: string;
  range: [number, number];
  source?: string;
  intervalMs?: number;
  /** What to send to each port per round (default: `junkDatagrams`). */
  datagrams?: () => Buffer[];
}): Promise<Flooder> {
  const socket: Socket = createSocket('udp4');
  socket.on('error', () => undefined); // ICMP port unreachable on closed ports
  let received = 0;
  socket.on('message', () => received++);
  await new Promise<void>((resolve) => socket.bind(0, opts.source ?? '127.0.0.9', () => resolve()));
  let sent = 0;
  let stopped = false;
  const round = () => {
    for (let port = opts.range[0]; port <= opts.range[1]; port++) {
      for (const d of (opts.datagrams ?? junkDatagrams)()) {
        socket.send(d, port, opts.host ?? '127.0.0.1');
        sent++;
      }
    }
  };
  round();
  const timer = setInterval(round, opts.intervalMs ?? 100);
  return {
    get sent() {
      return sent;
    },
    get received() {
      return received;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      await new Promise<void>((resolve) => socket.close(() => resolve()));
    },
  };
}
