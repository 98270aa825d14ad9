/**
 * grants.ts: one decision per (user's server, configuration), the same for every endpoint.
 */
import { describe, expect, it } from 'vitest';
import { grantsFor, type GrantPolicy, type Grants } from '../../bridge/token/grants.ts';

const full: Grants = { fullAccess: true, canPublish: true, createRoom: true, mayDelegate: true };
const restrictedPublishing: Grants = { fullAccess: false, canPublish: true, createRoom: false, mayDelegate: false };
const watchOnly: Grants = { fullAccess: false, canPublish: false, createRoom: false, mayDelegate: false };

describe('grantsFor', () => {
  it.each<[string, GrantPolicy, string, Grants]>([
    ['a listed server, everyone publishes', { fullAccessHomeservers: ['example.org'], publishPolicy: 'everyone' }, 'example.org', full],
    ['a listed server, full_access publishes', { fullAccessHomeservers: ['example.org'], publishPolicy: 'full_access' }, 'example.org', full],
    ['an unlisted server, everyone publishes', { fullAccessHomeservers: ['example.org'], publishPolicy: 'everyone' }, 'other.org', restrictedPublishing],
    ['an unlisted server, full_access publishes', { fullAccessHomeservers: ['example.org'], publishPolicy: 'full_access' }, 'other.org', watchOnly],
    ['the wildcard alone', { fullAccessHomeservers: ['*'], publishPolicy: 'full_access' }, 'anything.example', full],
    ['a wildcard among names is a name', { fullAccessHomeservers: ['*', 'example.org'], publishPolicy: 'full_access' }, 'other.org', watchOnly],
    ['a server with a port is its own name', { fullAccessHomeservers: ['example.org'], publishPolicy: 'full_access' }, 'example.org:8448', watchOnly],
    ['a second listed server', { fullAccessHomeservers: ['example.org', 'localhost'], publishPolicy: 'full_access' }, 'localhost', full],
    ['no match on a suffix', { fullAccessHomeservers: ['example.org'], publishPolicy: 'everyone' }, 'evil-example.org', restrictedPublishing],
  ])('%s', (_name, policy, server, expected) => {
    expect(grantsFor(policy, server)).toEqual(expected);
  });
});
