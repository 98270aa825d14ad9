/**
 * Drives the floor process (bench/_sfu-floor-worker.ts): this process sends SRTP audio packets
 * (10 streams × 50 packets/s, like the saturation sweep's publishers) to it and receives what it
 * forwards on N sockets; the floor process's CPU (/proc) over the forwarded packets is the µs
 * per forwarded packet no JavaScript SFU on this machine can beat. Several windows, median kept.
 */
import { randomBytes, createSecretKey } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { ask, forkWorker, median, round, sampleProc, sleep, type ProcessSet } from './_sfu-procs.ts';
import { gcmProtect } from './_sfu-floor-srtp.ts';

export interface FloorResult {
  destinations: number;
  inputPps: number;
  forwardedPps: number;
  cpuPercent: number;
  usPerForwardedPacket: number;
  windows: number[];
}

export async function runFloor(procs: ProcessSet, opts: { destinations: number; streams: number; windowMs: number; windows: number }): Promise<FloorResult> {
  const sinks: Socket[] = [];
  let received = 0;
  for (let i = 0; i < opts.destinations; i++) {
    const s = createSocket('udp4');
    s.on('message', () => received++);
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
    sinks.push(s);
  }
  const worker = forkWorker(procs, '_sfu-floor-worker.ts');
  const inKey = randomBytes(16);
  const inSalt = randomBytes(12);
  const { port } = await ask<{ port: number }>(worker, {
    type: 'start',
    inKey: inKey.toString('hex'),
    inSalt: inSalt.toString('hex'),
    outKeys: sinks.map(() => randomBytes(16).toString('hex')),
    outSalts: sinks.map(() => randomBytes(12).toString('hex')),
    destinations: sinks.map((s) => s.address().port),
  });
  const sender = createSocket('udp4');
  const key = createSecretKey(inKey);
  const payload = randomBytes(90);
  let seq = 0;
  const timer = setInterval(() => {
    for (let st = 0; st < opts.streams; st++) {
      const header = Buffer.alloc(12);
      header[0] = 0x80;
      header[1] = 111;
      header.writeUInt16BE(seq & 0xffff, 2);
      header.writeUInt32BE(seq * 960, 4);
      header.writeUInt32BE(0x2000 + st, 8);
      sender.send(gcmProtect(key, inSalt, header, payload, 0x2000 + st, seq & 0xffff), port, '127.0.0.1');
    }
    seq++;
  }, 20);
  try {
    await sleep(2000);
    const cpu: number[] = [];
    const pps: number[] = [];
    for (let w = 0; w < opts.windows; w++) {
      const a = { cpu: sampleProc(worker.pid!)?.cpuS ?? 0, n: received, at: performance.now() };
      await sleep(opts.windowMs);
      const s = (performance.now() - a.at) / 1000;
      cpu.push((((sampleProc(worker.pid!)?.cpuS ?? 0) - a.cpu) / s) * 100);
      pps.push((received - a.n) / s);
    }
    const us = cpu.map((c, i) => ((c / 100) / pps[i]!) * 1e6);
    return {
      destinations: opts.destinations,
      inputPps: opts.streams * 50,
      forwardedPps: round(median(pps)),
      cpuPercent: round(median(cpu)),
      usPerForwardedPacket: round(median(us), 2),
      windows: us.map((x) => round(x, 2)),
    };
  } finally {
    clearInterval(timer);
    sender.close();
    for (const s of sinks) s.close();
    await ask(worker, { type: 'close' }).catch(() => undefined);
  }
}
