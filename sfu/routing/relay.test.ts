/**
 * The relay header: a hosting node trusts `x-sfu-relay` (serve here, count the client by
 * x-forwarded-for) only with an HMAC of the request's URL and Authorization under one of the
 * cluster's API secrets; a forged, replayed-elsewhere or keyless header is an ordinary client.
 */
import { createHmac } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { isRelayedRequest, RELAY_HEADER } from './relay.ts';

const keys = { k1: 'secret-one-0123456789abcdef0123456789', k2: 'secret-two-0123456789abcdef0123456789' };
const mac = (secret: string, url: string, auth = '') => createHmac('sha256', secret).update(`${url}\n${auth}`).digest('base64url');

function req(url: string, headers: Record<string, string>): IncomingMessage {
  return { url, headers } as unknown as IncomingMessage;
}

describe('relay header', () => {
  const url = '/rtc?access_token=abc&sdk=js';
  it.each([
    ['a MAC under the first key', req(url, { [RELAY_HEADER]: `k1:${mac(keys.k1, url)}` }), true],
    ['a MAC under another key of the cluster', req(url, { [RELAY_HEADER]: `k2:${mac(keys.k2, url)}` }), true],
    ['a MAC over the Authorization header too', req(url, { authorization: 'Bearer t', [RELAY_HEADER]: `k1:${mac(keys.k1, url, 'Bearer t')}` }), true],
    ['no header', req(url, {}), false],
    ['an unknown key', req(url, { [RELAY_HEADER]: `k9:${mac(keys.k1, url)}` }), false],
    ['a MAC for another URL', req('/rtc?access_token=other', { [RELAY_HEADER]: `k1:${mac(keys.k1, url)}` }), false],
    ['a MAC without the Authorization it came with', req(url, { authorization: 'Bearer t', [RELAY_HEADER]: `k1:${mac(keys.k1, url)}` }), false],
    ['a MAC under a secret outside the cluster', req(url, { [RELAY_HEADER]: `k1:${mac('not-ours-0123456789abcdef0123456789', url)}` }), false],
    ['garbage', req(url, { [RELAY_HEADER]: 'k1' }), false],
  ])('%s: trusted %s', (_name, request, trusted) => {
    expect(isRelayedRequest(keys, request)).toBe(trusted);
  });
});
