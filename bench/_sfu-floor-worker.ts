/**
 * The floor of the SFU benchmark: the least work Node can do to forward SRTP, with no werift.
 * This child process receives SRTP (AEAD_AES_128_GCM, the profile werift peers negotiate) on one
 * UDP socket, unprotects it, and for each of N destinations rewrites the header (SSRC, sequence
 * number) into a fresh buffer, protects it with that destination's key and sends it: one
 * createDecipheriv in, one createCipheriv and one `dgram` send per forwarded packet. Its CPU
 * per forwarded packet is what the SFU's is compared with.
 *
 * IPC: `start {keys: hex[], destinations: port[]}` answers `{port}`; `close` exits.
 */
import { createDecipheriv, createSecretKey } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { TAG, gcmIv as iv, gcmProtect } from './_sfu-floor-srtp.ts';

interface Request {
  id: number;
  type: 'start' | 'close';
  inKey?: string;
  inSalt?: string;
  outKeys?: string[];
  outSalts?: string[];
  destinations?: number[];
}

function start(req: Request): Promise<{ port: number }> {
  const inKey = createSecretKey(Buffer.from(req.inKey!, 'hex'));
  const inSalt = Buffer.from(req.inSalt!, 'hex');
  const outs = req.outKeys!.map((k, i) => ({
    key: createSecretKey(Buffer.from(k, 'hex')),
    salt: Buffer.from(req.outSalts![i]!, 'hex'),
    port: req.destinations![i]!,
    ssrc: 0x10000 + i,
  }));
  const sock = createSocket('udp4');
  sock.on('message', (data) => {
    const cc = data[0]! & 0x0f;
    const headerLen = 12 + cc * 4;
    const seq = data.readUInt16BE(2);
    const ssrc = data.readUInt32BE(8);
    const decipher = createDecipheriv('aes-128-gcm', inKey, iv(inSalt, ssrc, 0, seq));
    const header = data.subarray(0, headerLen);
    decipher.setAAD(header);
    decipher.setAuthTag(data.subarray(data.length - TAG));
    const payload = decipher.update(data.subarray(headerLen, data.length - TAG));
    try {
      decipher.final();
    } catch {
      return;
    }
    for (const o of outs) {
      const h = Buffer.allocUnsafe(headerLen);
      header.copy(h, 0);
      h.writeUInt32BE(o.ssrc, 8);
      sock.send(gcmProtect(o.key, o.salt, h, payload, o.ssrc, seq), o.port, '127.0.0.1');
    }
  });
  return new Promise((resolve) => sock.bind(0, '127.0.0.1', () => resolve({ port: sock.address().port })));
}

process.on('message', (req: Request) => {
  if (req.type === 'close') {
    process.send?.({ id: req.id });
    setTimeout(() => process.exit(0), 50);
    return;
  }
  start(req).then(
    (r) => process.send?.({ id: req.id, ...r }),
    (err: unknown) => process.send?.({ id: req.id, error: String(err) }),
  );
});
process.on('disconnect', () => process.exit(0));
