import { describe, expect, it } from 'vitest';
import {
  goJsonArray,
  hashOfArray,
  legacyLiveKitIdentity,
  liveKitIdentityForMember,
  liveKitIdentityForMemberId,
  liveKitRoomAlias,
  serverNameOfUserId,
} from './names.ts';

describe('LiveKit names (lk-jwt-service test vectors)', () => {
  it('reproduces the room alias vector for ["!roomid:example.com","slot1234"]', () => {
    expect(liveKitRoomAlias('!roomid:example.com', 'slot1234')).toBe('O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc');
  });
  it('reproduces the identity vector for ["@alice:example.com","DEVICE123","memberABC"]', () => {
    expect(liveKitIdentityForMember('@alice:example.com', 'DEVICE123', 'memberABC')).toBe(
      'J+T45tGruxc+HrUOqJJlyQSV33m728Cme4+vt8/SWrU',
    );
  });
  it('reproduces the legacy room vector for ["!room:example.com","m.call#ROOM"]', () => {
    expect(liveKitRoomAlias('!room:example.com', 'm.call#ROOM')).toBe('krj2dgxw2K6EOm9he4GfQJ6JsSVWfJ8a7BkyjZcSmxs');
  });
  it('reproduces the room vector for ["!room:example.com","m.call#"]', () => {
    expect(liveKitRoomAlias('!room:example.com', 'm.call#')).toBe('hrQ0l3fv1RI0sCBUn3Nu59Bu/b3f7hWXbMLLfFMLNOY');
  });
  it('escapes <, >, & and line separators as Go does', () => {
    expect(goJsonArray(['a<b>&c\u2028'])).toBe('["a\\u003cb\\u003e\\u0026c\\u2028"]');
    expect(hashOfArray(['<'])).not.toBe(hashOfArray(['\\u003c']));
  });
  it('has no padding and uses the standard alphabet', () => {
    for (let i = 0; i < 50; i++) {
      const h = liveKitRoomAlias(`!r${i}:x`, 'm.call#');
      expect(h).toMatch(/^[A-Za-z0-9+/]{43}$/);
    }
  });
  it('makes the AS line B identity from (mxid, member_id) and the legacy one plain', () => {
    expect(liveKitIdentityForMemberId('@a:b', 'm1')).toBe(hashOfArray(['@a:b', 'm1']));
    expect(legacyLiveKitIdentity('@a:b', 'DEV')).toBe('@a:b:DEV');
  });
  it.each([
    ['@alice:example.com', 'example.com'],
    ['@alice:example.com:8448', 'example.com:8448'],
    ['alice:example.com', undefined],
    ['@:example.com', undefined],
    ['@alice', undefined],
    ['@alice:', undefined],
  ])('parses the server name of %s', (id, server) => {
    expect(serverNameOfUserId(id)).toBe(server);
  });
});
