/**
 * The token service's outbound bounds, table-driven: which server names are valid (the Matrix
 * grammar, numeric IPv4 disguises refused), which addresses the policy refuses (IPv4 embedded
 * in IPv6 judged by the IPv4 it carries), the guarded lookup, the LRU cache and the look-up
 * limiter.
 */
import { describe, expect, it } from 'vitest';
import { createManualClock } from '../../common/clock.ts';
import { AddressRefusedError, createAddressPolicy, embeddedIpv4, isRefusedAddress } from '../../bridge/token/address-policy.ts';
import { createFederationClient, splitHostPort, type FederationClient } from '../../bridge/token/federation.ts';
import { createCsApiResolver, CsApiUnresolvableError } from '../../bridge/token/cs-api-resolver.ts';
import { createSilentLogger } from '../../common/logger.ts';
import { createConcurrencyLimiter, ExpiringLru, FederationBusyError } from '../../bridge/token/outbound-limits.ts';

describe('server names (splitHostPort)', () => {
  it.each([
    ['matrix.org', { host: 'matrix.org', port: undefined }],
    ['matrix.org:8448', { host: 'matrix.org', port: 8448 }],
    ['1.2.3.4', { host: '1.2.3.4', port: undefined }],
    ['1.2.3.4:1234', { host: '1.2.3.4', port: 1234 }],
    ['[1234:5678::abcd]', { host: '1234:5678::abcd', port: undefined }],
    ['[1234:5678::abcd]:5678', { host: '1234:5678::abcd', port: 5678 }],
    ['localhost', { host: 'localhost', port: undefined }],
    ['xn--bcher-kva.example', { host: 'xn--bcher-kva.example', port: undefined }],
    ['host-1.example.com.', { host: 'host-1.example.com.', port: undefined }],
    ['1.example', { host: '1.example', port: undefined }],
  ])('accepts %s', (name, expected) => {
    expect(splitHostPort(name)).toEqual(expected);
  });

  it.each([
    '127.1', '2130706433', '0x7f000001', '0X7F.1', '0177.0.0.1', '127.0.0.1.', '127.000.000.001', '256.1.1.1', '1.2.3',
    'example.0x1f', 'example.123', '::1', '[::1', '[127.0.0.1]', '[fe80::1%eth0]', 'a..b', 'under_score.example',
    'host:0', 'host:65536', 'host:', 'host:12a', '', `${'a'.repeat(64)}.example`, `${'a.'.repeat(150)}com`,
  ])('refuses %s as an invalid server name', (name) => {
    expect(splitHostPort(name)).toBeUndefined();
  });
});

describe('address policy', () => {
  it.each([
    '127.0.0.1', '127.255.255.254', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '169.254.169.254',
    '100.64.0.1', '0.0.0.0', '224.0.0.1', '239.255.255.250', '255.255.255.255', '240.0.0.1', '192.0.2.1', '198.18.0.1',
    '::', '::1', 'fe80::1', 'fc00::1', 'fd12:3456::1', 'ff02::1', 'fec0::1', '2001:db8::1',
    '::ffff:127.0.0.1', '::ffff:7f00:1', '::ffff:10.0.0.1', '::127.0.0.1', '64:ff9b::10.0.0.1', '64:ff9b::7f00:1',
    '2002:7f00:1::1', '2002:c0a8:101::', '64:ff9b:1::1', 'fe80::1%eth0',
  ])('refuses %s', (address) => {
    expect(isRefusedAddress(address)).toBe(true);
  });

  it.each(['1.1.1.1', '8.8.8.8', '172.32.0.1', '100.128.0.1', '2606:4700::1111', '::ffff:8.8.8.8', '64:ff9b::8.8.8.8', '2002:808:808::1'])(
    'allows %s',
    (address) => {
      expect(isRefusedAddress(address)).toBe(false);
    },
  );

  it('reads the IPv4 inside mapped, compatible, NAT64 and 6to4 addresses', () => {
    expect(embeddedIpv4('::ffff:7f00:1')).toBe('127.0.0.1');
    expect(embeddedIpv4('::ffff:1.2.3.4')).toBe('1.2.3.4');
    expect(embeddedIpv4('64:ff9b::102:304')).toBe('1.2.3.4');
    expect(embeddedIpv4('2002:102:304::1')).toBe('1.2.3.4');
    expect(embeddedIpv4('::1')).toBeUndefined();
    expect(embeddedIpv4('2606:4700::1111')).toBeUndefined();
  });

  it('keeps only allowed addresses of a name, and refuses a name with none', async () => {
    const records: Record<string, { address: string; family: number }[]> = {
      'mixed.example': [{ address: '10.0.0.1', family: 4 }, { address: '93.184.216.34', family: 4 }],
      'inside.example': [{ address: '127.0.0.1', family: 4 }, { address: '::1', family: 6 }],
    };
    const policy = createAddressPolicy(false, (name, _o, cb) => cb(null, records[name] ?? []));
    const lookup = (name: string, all: boolean) =>
      new Promise<unknown>((resolve, reject) =>
        policy.lookup!(name, { all }, (err: Error | null, address: unknown) => (err ? reject(err) : resolve(address))),
      );
    await expect(lookup('mixed.example', true)).resolves.toEqual([{ address: '93.184.216.34', family: 4 }]);
    await expect(lookup('mixed.example', false)).resolves.toBe('93.184.216.34');
    await expect(lookup('inside.example', true)).rejects.toBeInstanceOf(AddressRefusedError);
    expect(() => policy.checkLiteral('192.168.0.1')).toThrow(AddressRefusedError);
    expect(() => policy.checkLiteral('1.1.1.1')).not.toThrow();
    const open = createAddressPolicy(true);
    expect(open.lookup).toBeUndefined();
    expect(() => open.checkLiteral('127.0.0.1')).not.toThrow();
  });
});

describe('ExpiringLru', () => {
  it('evicts the least recently used over its cap and forgets entries when they expire', () => {
    const clock = createManualClock(0);
    const lru = new ExpiringLru<number>(clock, 2);
    lru.set('a', 1, 1000);
    lru.set('b', 2, 1000);
    expect(lru.get('a')).toBe(1); // a is now the most recent
    lru.set('c', 3, 1000);
    expect(lru.get('b')).toBeUndefined();
    expect(lru.size).toBe(2);
    clock.advance(1000);
    expect(lru.get('a')).toBeUndefined();
    expect(lru.get('c')).toBeUndefined();
    expect(lru.size).toBe(0);
  });
});

describe('concurrency limiter', () => {
  it('runs at most maxActive at once, queues up to maxQueued, refuses beyond with a 503 that says when to retry', async () => {
    const limiter = createConcurrencyLimiter(2, 1);
    const releases: (() => void)[] = [];
    const task = () => new Promise<string>((resolve) => releases.push(() => resolve('done')));
    const running = [limiter.run(task), limiter.run(task), limiter.run(task)];
    await Promise.resolve();
    expect([limiter.active, limiter.queued, releases.length]).toEqual([2, 1, 2]);
    const refused = await limiter.run(task).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(FederationBusyError);
    expect((refused as FederationBusyError).status).toBe(503);
    expect((refused as FederationBusyError).extra.headers).toEqual({ 'Retry-After': '5' });
    releases.shift()!();
    await running[0];
    await new Promise((r) => setImmediate(r));
    expect([limiter.active, limiter.queued, releases.length]).toEqual([2, 0, 2]);
    for (const r of releases.splice(0)) r();
    await Promise.all(running);
    expect([limiter.active, limiter.queued]).toEqual([0, 0]);
  });

  it('frees the slot of a task that throws', async () => {
    const limiter = createConcurrencyLimiter(1, 0);
    await expect(limiter.run(() => Promise.reject(new Error('x')))).rejects.toThrow('x');
    await expect(limiter.run(async () => 'ok')).resolves.toBe('ok');
  });
});

describe('URLs others fetch (checkUrlHost) and the client-server API resolver', () => {
  const names: Record<string, { address: string; family: number }[]> = {
    'inside.example': [{ address: '10.1.2.3', family: 4 }],
    'public.example': [{ address: '93.184.216.34', family: 4 }],
  };
  const lookup: Parameters<typeof createAddressPolicy>[1] = (name, _o, cb) => cb(null, names[name] ?? []);
  const client = (allowPrivateAddresses: boolean) =>
    createFederationClient({ clock: createManualClock(0), logger: createSilentLogger(), insecureSkipVerifyTls: false, allowPrivateAddresses, lookup });

  it('refuses private literals and names resolving only to private addresses, unless allowed', async () => {
    const strict = client(false);
    await expect(strict.checkUrlHost('http://127.0.0.1:8008')).rejects.toBeInstanceOf(AddressRefusedError);
    await expect(strict.checkUrlHost('https://[::ffff:10.0.0.1]/')).rejects.toBeInstanceOf(AddressRefusedError);
    await expect(strict.checkUrlHost('https://inside.example')).rejects.toBeInstanceOf(AddressRefusedError);
    await expect(strict.checkUrlHost('https://public.example')).resolves.toBeUndefined();
    await expect(client(true).checkUrlHost('http://127.0.0.1:8008')).resolves.toBeUndefined();
  });

  it('does not use a .well-known/matrix/client base_url that points inside', async () => {
    const strict = client(false);
    let baseUrl = 'https://inside.example';
    const federation: FederationClient = {
      ...strict,
      getJson: async () => ({ status: 200, json: { 'm.homeserver': { base_url: baseUrl } } }),
    };
    const resolver = createCsApiResolver({ clock: createManualClock(0), logger: createSilentLogger(), federation, overrides: {} });
    await expect(resolver.resolve('remote.example')).rejects.toBeInstanceOf(CsApiUnresolvableError);
    baseUrl = 'https://public.example/';
    await expect(resolver.resolve('remote.example')).resolves.toBe('https://public.example');
  });
});
