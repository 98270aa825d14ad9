import { describe, expect, it } from 'vitest';
import { decodeBody, GET_TOKEN_SPEC, PROXIED_SPEC, SFU_GET_SPEC } from './body.ts';
import { MatrixError } from './errors.ts';
import { splitHostPort } from './federation.ts';

const raw = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v));

function notJson(body: unknown): boolean {
  try {
    decodeBody(raw(body), GET_TOKEN_SPEC);
    return false;
  } catch (err) {
    return err instanceof MatrixError && err.errcode === 'M_NOT_JSON' && err.status === 400 && err.message === 'Error reading request';
  }
}

describe('request body decoding', () => {
  it.each([
    ['not JSON', '{'],
    ['empty body', ''],
    ['an array', '[]'],
    ['a string', '"x"'],
    ['null', 'null'],
    ['a number for a string field', { room_id: 1 }],
    ['a string for an int field', { delay_timeout: '5' }],
    ['a fraction for an int field', { delay_timeout: 1.5 }],
    ['an array for an object field', { member: [] }],
    ['a string for an object field', { openid_token: 'x' }],
    ['a wrong type one level down', { openid_token: { expires_in: 'soon' } }],
  ])('rejects %s with 400 M_NOT_JSON', (_what, body) => {
    expect(notJson(body)).toBe(true);
  });

  it.each([
    ['unknown top-level fields', { room_id: 'r', brand_new: { deep: [1] } }],
    ['unknown nested fields', { openid_token: { access_token: 't', x: 1 }, member: { id: 'm', y: true } }],
    ['null values', { room_id: null, member: null, delay_timeout: null }],
    ['an empty object', {}],
  ])('accepts %s', (_what, body) => {
    expect(notJson(body)).toBe(false);
  });

  it('fills missing and null fields with zero values, as Go does', () => {
    const b = decodeBody(raw({ room: 'r', openid_token: null }), SFU_GET_SPEC);
    expect(b).toMatchObject({ room: 'r', device_id: '', delay_timeout: 0, openid_token: { access_token: '', expires_in: 0 } });
  });

  it('decodes both proxied member shapes', () => {
    expect(decodeBody(raw({ member_id: 'm1' }), PROXIED_SPEC).member_id).toBe('m1');
    expect(decodeBody(raw({ member: { id: 'm', claimed_device_id: 'D' } }), PROXIED_SPEC).member).toEqual({
      id: 'm',
      claimed_device_id: 'D',
      claimed_user_id: '',
    });
  });
});

describe('server name parsing', () => {
  it.each([
    ['example.org', { host: 'example.org', port: undefined }],
    ['example.org:8448', { host: 'example.org', port: 8448 }],
    ['127.0.0.1:1234', { host: '127.0.0.1', port: 1234 }],
    ['[::1]:8448', { host: '::1', port: 8448 }],
    ['[::1]', { host: '::1', port: undefined }],
    ['', undefined],
    ['example.org:0', undefined],
    ['example.org:99999', undefined],
    ['example.org:x', undefined],
    ['::1', undefined],
    ['exa mple.org', undefined],
    ['[nothost]:1', undefined],
  ])('parses %j', (name, expected) => {
    expect(splitHostPort(name)).toEqual(expected);
  });
});
