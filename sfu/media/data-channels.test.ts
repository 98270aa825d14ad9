/**
 * Data to one subscriber is bounded by what its channels hold: lossy data is dropped above
 * MAX_BUFFERED_LOSSY queued bytes, reliable above MAX_BUFFERED_RELIABLE, each drop is counted,
 * and the drop log is rate-limited (one line per channel per 10 s, not one per packet).
 */
import { describe, expect, it } from 'vitest';
import type { RTCPeerConnection } from 'werift';
import { createLogger } from '../../common/logger.ts';
import { MAX_BUFFERED_LOSSY, MAX_BUFFERED_RELIABLE, SubscriberDataChannels } from './data-channels.ts';

/** Stand-in for a werift data channel whose SCTP queue never drains (a receiver not reading). */
function stuckChannel(readyState: string) {
  const sent: Buffer[] = [];
  const channel = {
    readyState,
    bufferedAmount: 0,
    stateChanged: { subscribe: () => ({ unSubscribe: () => undefined }) },
    send(data: Buffer) {
      sent.push(data);
      channel.bufferedAmount += data.length;
    },
  };
  return { channel, sent };
}

function setup(readyState = 'open') {
  const reliable = stuckChannel(readyState);
  const lossy = stuckChannel(readyState);
  const pc = {
    createDataChannel: (label: string) => (label === '_lossy' ? lossy.channel : reliable.channel),
  } as unknown as RTCPeerConnection;
  const lines: string[] = [];
  let now = 0;
  const drops: string[] = [];
  const channels = new SubscriberDataChannels({
    log: createLogger({ name: 't', level: 'info', destination: { write: (l: string) => void lines.push(l) } }),
    now: () => now,
    onDrop: (kind, reason) => drops.push(`${kind}/${reason}`),
  });
  channels.open(pc);
  return { channels, reliable, lossy, lines, drops, advance: (ms: number) => (now += ms) };
}

describe('SubscriberDataChannels', () => {
  it('drops lossy data once the channel holds more than the lossy bound, and logs that once', () => {
    const t = setup();
    const packet = new Uint8Array(1000);
    for (let i = 0; i < 200; i++) t.channels.send('lossy', packet);
    const queued = t.lossy.sent.length * 1000;
    expect(queued).toBeGreaterThan(MAX_BUFFERED_LOSSY);
    expect(queued).toBeLessThanOrEqual(MAX_BUFFERED_LOSSY + 1000);
    expect(t.drops.length).toBe(200 - t.lossy.sent.length);
    expect(t.lines.filter((l) => l.includes('not reading')).length).toBe(1);
    t.advance(10_000);
    t.channels.send('lossy', packet);
    expect(t.lines.filter((l) => l.includes('not reading')).length).toBe(2);
    expect(t.lines.at(-1)).toContain(`"droppedSinceLastLog":${200 - t.lossy.sent.length - 1}`);
  });

  it('bounds reliable data to a receiver that does not read', () => {
    const t = setup();
    const packet = new Uint8Array(16 * 1024);
    for (let i = 0; i < 200; i++) t.channels.send('reliable', packet);
    expect(t.reliable.sent.length * packet.length).toBeLessThanOrEqual(MAX_BUFFERED_RELIABLE + packet.length);
    expect(t.drops.every((d) => d === 'reliable/backlog')).toBe(true);
    expect(t.drops.length).toBeGreaterThan(100);
  });

  it('logs one line, not one per packet, while a channel that has not opened drops reliable data', () => {
    const t = setup('connecting');
    for (let i = 0; i < 1000; i++) t.channels.send('reliable', new Uint8Array(10));
    expect(t.drops.length).toBe(1000 - 256);
    expect(t.lines.filter((l) => l.includes('has not opened')).length).toBe(1);
  });
});
