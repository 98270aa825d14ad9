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

describe('logger scrubbing secrets inside text', () => {
  const JWT = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVl';

  it('scrubs JWTs, Bearer credentials and access_token parameters from messages, errors and nested strings', () => {
    const out = capture();
    const log = createLogger({ name: 't', destination: out.stream });
    const err = new Error(`GET https://hs.example/_matrix/federation/v1/openid/userinfo?access_token=OPENID123 failed`);
    log.warn({ err, request: { line: { raw: { header: `Authorization: Bearer syt_USERTOKEN` } } }, url: `wss://sfu/rtc?access_token=${JWT}&auto_subscribe=1` }, `joined with ${JWT}`);
    log.error(new Error(`token ${JWT} rejected`), 'plain error');
    const text = out.lines().map((l) => JSON.stringify(l)).join('\n');
    for (const secret of ['OPENID123', 'syt_USERTOKEN', JWT, 'eyJzdWIiOiJhbGljZSJ9']) expect(text).not.toContain(secret);
    const [first, second] = out.lines();
    expect(first).toMatchObject({
      msg: 'joined with [redacted jwt]',
      url: 'wss://sfu/rtc?access_token=[redacted]&auto_subscribe=1',
      request: { line: { raw: { header: 'Authorization: Bearer [redacted]' } } },
    });
    expect((first!.err as { message: string }).message).toBe('GET https://hs.example/_matrix/federation/v1/openid/userinfo?access_token=[redacted] failed');
    expect((second!.err as { message: string }).message).toBe('token [redacted jwt] rejected');
  });

  it('leaves ordinary text, numbers and user ids alone', () => {
    const out = capture();
    const log = createLogger({ name: 't', destination: out.stream });
    log.info({ user: '@alice:hs', room: '!r:hs', n: 3, path: '/sfu/get?room=x', list: ['a=b'] }, 'issued for @alice:hs');
    expect(out.lines()[0]).toMatchObject({ user: '@alice:hs', room: '!r:hs', n: 3, path: '/sfu/get?room=x', list: ['a=b'], msg: 'issued for @alice:hs' });
  });
});
