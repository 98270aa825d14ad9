/**
 * The connectivity page's edge on a real SFU server: served on /test only when
 * `connectivity_page` is on, livekit-client's browser build comes from node_modules, and the
 * dev token endpoint mints tokens the SFU's own verifier accepts, for `connectivity-test-*`
 * rooms only, refusing bad bodies with a JSON error naming the field.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createManualClock } from '../../common/clock.ts';
import { createSilentLogger } from '../../common/logger.ts';
import { parseSfuConfig } from '../config.ts';
import { createSfuServer, type SfuServer } from '../server.ts';
import { verifyJoinToken } from '../signal/auth.ts';
import { DEV_ROOM_PREFIX, DEV_TOKEN_TTL_S, DevTokenRequestError, parseDevTokenRequest } from './router.ts';

const KEYS = { firstkey: 'a'.repeat(32), secondkey: 'b'.repeat(32) };

async function postToken(url: string, body: string, contentType = 'application/json') {
  const res = await fetch(`${url}/test/token`, { method: 'POST', headers: { 'Content-Type': contentType }, body });
  return { status: res.status, body: (await res.json()) as { token?: string; error?: string } };
}

describe('connectivity page routes', () => {
  let server: SfuServer | undefined;
  const clock = createManualClock();

  async function start(connectivityPage: boolean): Promise<string> {
    const config = parseSfuConfig(
      { port: 0, bind_addresses: ['127.0.0.1'], keys: KEYS, connectivity_page: connectivityPage },
      'test',
    );
    server = createSfuServer({ config, logger: createSilentLogger(), clock});
    return (await server.start()).url;
  }

  afterEach(async () => {
    await server?.stop();
    server = undefined;
  });

  it('answers 404 on every /test path when connectivity_page is off', async () => {
    const url = await start(false);
    for (const path of ['/test', '/test/', '/test/connectivity.js', '/test/livekit-client.umd.js']) {
      expect((await fetch(`${url}${path}`)).status, path).toBe(404);
    }
    expect((await fetch(`${url}/test/token`, { method: 'POST', body: '{}' })).status).toBe(404);
  });

  it('serves the page, its script and livekit-client from node_modules when on', async () => {
    const url = await start(true);
    const redirect = await fetch(`${url}/test`, { redirect: 'manual' });
    expect(redirect.status).toBe(301);
    expect(new URL(redirect.headers.get('location')!, `${url}/test`).pathname).toBe('/test/');
    const page = await fetch(`${url}/test/`);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await page.text();
    expect(html).toContain('src="livekit-client.umd.js"');
    expect(html).toContain('src="connectivity.js"');
    const script = await fetch(`${url}/test/connectivity.js`);
    expect(script.headers.get('content-type')).toMatch(/^text\/javascript/);
    expect(await script.text()).toContain('window.LivekitClient');
    const lk = await fetch(`${url}/test/livekit-client.umd.js`);
    expect(lk.status).toBe(200);
    expect(await lk.text()).toContain('LivekitClient');
  });

  it('mints a dev token with the first API key that the SFU accepts for that room and identity', async () => {
    const url = await start(true);
    const room = `${DEV_ROOM_PREFIX}abc`;
    const res = await postToken(url, JSON.stringify({ room, identity: 'alice' }));
    expect(res.status).toBe(200);
    const claims = await verifyJoinToken(res.body.token!, KEYS, clock.now());
    expect(claims.apiKey).toBe('firstkey');
    expect(claims.room).toBe(room);
    expect(claims.identity).toBe('alice');
    expect(claims.video).toMatchObject({ roomJoin: true, canPublish: true, canSubscribe: true });
    await expect(verifyJoinToken(res.body.token!, KEYS, clock.now() + (DEV_TOKEN_TTL_S + 120) * 1000)).rejects.toThrow(
      /expired/,
    );
  });

  it.each([
    ['a room outside the dev prefix', JSON.stringify({ room: 'some-matrix-call', identity: 'a' }), 'room: dev tokens only join'],
    ['the bare prefix', JSON.stringify({ room: DEV_ROOM_PREFIX, identity: 'a' }), 'room: dev tokens only join'],
    ['a missing identity', JSON.stringify({ room: `${DEV_ROOM_PREFIX}x` }), 'identity: required'],
    ['an identity with spaces', JSON.stringify({ room: `${DEV_ROOM_PREFIX}x`, identity: 'a b' }), 'identity: use letters'],
    ['a JSON array', '[]', 'body must be a JSON object'],
    ['malformed JSON', '{"room":', 'bad request'],
  ])('refuses %s with 400 and a message naming the problem', async (_name, body, message) => {
    const url = await start(true);
    const res = await postToken(url, body);
    expect(res.status).toBe(400);
    expect(res.body.error).toContain(message);
    expect(res.body.token).toBeUndefined();
  });

  it('refuses a body that is not sent as JSON', async () => {
    const url = await start(true);
    const res = await postToken(url, 'room=x', 'application/x-www-form-urlencoded');
    expect(res.status).toBe(400);
    expect(res.body.error).toContain('Content-Type: application/json');
  });
});

describe('parseDevTokenRequest', () => {
  it.each([
    [{ room: `${DEV_ROOM_PREFIX}r1`, identity: 'tester-1' }, undefined],
    [{ room: `${DEV_ROOM_PREFIX}r1`, identity: 'x'.repeat(129) }, 'identity: longer than 128'],
    [{ room: `${DEV_ROOM_PREFIX}r1`, identity: 7 }, 'identity: required'],
    [{ room: `${DEV_ROOM_PREFIX}a/b`, identity: 'a' }, 'room: use letters'],
    [null, 'body must be a JSON object'],
  ])('%j -> %s', (body, error) => {
    if (error === undefined) expect(parseDevTokenRequest(body)).toEqual(body);
    else {
      expect(() => parseDevTokenRequest(body)).toThrow(DevTokenRequestError);
      expect(() => parseDevTokenRequest(body)).toThrow(error);
    }
  });
});
