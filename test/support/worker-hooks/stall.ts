/**
 * Media-worker test hook: a worker told so on the BroadcastChannel `channel` blocks its event
 * loop for `ms` (as a stuck or overloaded worker would), so tests can check that the other
 * workers keep serving and that the pool replaces a worker that stops answering.
 */
import { workerData } from 'node:worker_threads';

export default function hooks(data: { channel: string }) {
  const channel = new BroadcastChannel(data.channel);
  (channel as unknown as { unref?: () => void }).unref?.();
  const index = (workerData as { index: number }).index;
  channel.addEventListener('message', (e: MessageEvent) => {
    const msg = e.data as { worker: number; ms: number };
    if (msg.worker !== index) return;
    const until = Date.now() + msg.ms;
    while (Date.now() < until) {
      // busy: nothing else runs on this thread
    }
  });
  return {};
}
