/**
 * The consumer thread of the relay ring's cross-thread test (sfu/media/relay-ring.test.ts):
 * drains the ring it is given, sleeping on `Atomics.waitAsync` whenever it is empty, until it
 * has read `expect` packets or the ring is closed, then posts back what it read (track id,
 * stamp, length and an FNV-1a hash of each payload) and exits. A pending `Atomics.waitAsync`
 * does not keep a thread's event loop alive, so a port listener does until the end.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { RelayRingReader } from '../../sfu/media/relay-ring.ts';
import { fnv1a } from './fnv1a.ts';

const { sab, expect } = workerData as { sab: SharedArrayBuffer; expect: number };
const reader = new RelayRingReader(sab);
const keepAlive = () => undefined;
parentPort!.on('message', keepAlive);

const seen: { trackId: number; stamp: number; length: number; hash: number }[] = [];
let sleeps = 0;
while (seen.length < expect) {
  reader.drain((trackId, stamp, payload) => seen.push({ trackId, stamp, length: payload.length, hash: fnv1a(payload) }));
  if (seen.length >= expect || reader.closed) break;
  if (reader.armWake()) {
    sleeps++;
    await reader.waitAsync();
  }
}
// A worker_threads port, not a window: no target origin.
parentPort!.postMessage({ seen, sleeps }, []);
parentPort!.off('message', keepAlive);
