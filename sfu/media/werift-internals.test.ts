/**
 * The start-up probe of werift's private shapes: on the werift this project pins every fast
 * path is on and logged as such; a sender of another shape is refused (its user falls back).
 */
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.ts';
import { hasSenderShape, probeWeriftInternals } from './werift-internals.ts';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { lines, logger: createLogger({ name: 'test', destination, level: 'info' }) };
}

describe('probeWeriftInternals', () => {
  it('finds every shape it relies on in the pinned werift and logs the fast paths as active', async () => {
    const { lines, logger } = capture();
    const paths = probeWeriftInternals(logger);
    expect(paths).toEqual({ fastSend: true, ownSrtpProtect: true, srtpKeyObjects: true, rtpHeaderGuard: true, problems: [] });
    await new Promise((r) => setImmediate(r));
    expect(lines.some((l) => l.msg === 'werift fast paths active' && l.fastSend === true)).toBe(true);
  });

  it('refuses a sender whose fields are not the known ones', () => {
    expect(hasSenderShape({})).toBe(false);
    expect(hasSenderShape({ stopped: false, ssrc: 1, headerExtensions: [], rtpContinuityPending: false, seqOffset: 0 })).toBe(false);
  });
});
