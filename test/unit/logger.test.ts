import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.ts';

function capture(): { stream: Writable; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  return { stream, lines: () => chunks.join('').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>) };
}

describe('logger', () => {
  it('redacts tokens, secrets and OpenID credentials at any of the first levels', () => {
    const out = capture();
    const log = createLogger({ name: 't', destination: out.stream });
    log.child({ room: '!r:hs' }).info(
      {
        jwt: 'eyJ.secret',
        openid_token: { access_token: 'abc', matrix_server_name: 'hs' },
        headers: { authorization: 'Bearer x' },
        keys: { secret: 's' },
        user: '@a:hs',
      },
      'issued',
    );
    const [line] = out.lines();
    const text = JSON.stringify(line);
    expect(text).not.toContain('eyJ.secret');
    expect(text).not.toContain('abc');
    expect(text).not.toContain('Bearer x');
    expect(text).not.toContain('"s"');
    expect(line).toMatchObject({ room: '!r:hs', user: '@a:hs', jwt: '[redacted]', msg: 'issued' });
  });
});
