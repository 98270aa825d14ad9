/**
 * Where the token service may connect when a client names a homeserver: the Matrix server-name
 * grammar (IPv4 dotted quad, `[IPv6]` or DNS name, optional port) with the numeric IPv4
 * disguises a resolver would still accept (`127.1`, `2130706433`, `0x7f000001`, `0177.0.0.1`)
 * refused as invalid, and the address policy checked on every address actually connected to:
 * loopback, private, shared (CGNAT), link-local, unique-local, site-local, multicast,
 * unspecified, reserved and documentation ranges are refused, IPv4 embedded in IPv6
 * (IPv4-mapped, IPv4-compatible, NAT64, 6to4) by the IPv4 it carries. `guardedLookup` is a
 * `net.connect` lookup that resolves like `dns.lookup` and keeps only allowed addresses, so a
 * DNS name (or an SRV / `.well-known` delegation) pointing at 127.0.0.1 is refused too, at the
 * moment of connecting (no rebinding window between check and use).
 */
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';

/** A connection the address policy refused; nothing was sent. */
export class AddressRefusedError extends Error {
  readonly code = 'ERR_ADDRESS_REFUSED';
  constructor(host: string, address?: string) {
    super(
      address && address !== host
        ? `${host} resolves to ${address}, a private or reserved address (federation_allow_private_addresses is off)`
        : `${host} is a private or reserved address (federation_allow_private_addresses is off)`,
    );
    this.name = 'AddressRefusedError';
  }
}

const REFUSED_V4: [string, number][] = [
  ['0.0.0.0', 8], // "this network", unspecified
  ['10.0.0.0', 8],
  ['100.64.0.0', 10], // shared address space (CGNAT)
  ['127.0.0.0', 8],
  ['169.254.0.0', 16], // link-local
  ['172.16.0.0', 12],
  ['192.0.0.0', 24], // IETF protocol assignments
  ['192.0.2.0', 24], // TEST-NET-1
  ['192.88.99.0', 24], // 6to4 relay anycast
  ['192.168.0.0', 16],
  ['198.18.0.0', 15], // benchmarking
  ['198.51.100.0', 24], // TEST-NET-2
  ['203.0.113.0', 24], // TEST-NET-3
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, and 255.255.255.255
];

const REFUSED_V6: [string, number][] = [
  ['::', 128], // unspecified
  ['::1', 128], // loopback
  ['64:ff9b:1::', 48], // local-use NAT64
  ['100::', 64], // discard-only
  ['2001:db8::', 32], // documentation
  ['fc00::', 7], // unique-local
  ['fe80::', 10], // link-local
  ['fec0::', 10], // site-local (deprecated)
  ['ff00::', 8], // multicast
];

function blockListOf(v4: [string, number][], v6: [string, number][]): BlockList {
  const list = new BlockList();
  for (const [net, prefix] of v4) list.addSubnet(net, prefix, 'ipv4');
  for (const [net, prefix] of v6) list.addSubnet(net, prefix, 'ipv6');
  return list;
}

const REFUSED = blockListOf(REFUSED_V4, REFUSED_V6);

function groupsOf(text: string): string[] {
  return text ? text.split(':') : [];
}

/** The 16 bytes of an IPv6 address (`isIP(a) === 6` assumed), dotted-quad tails included. */
function ipv6Bytes(address: string): number[] {
  let text = address.toLowerCase();
  const zone = text.indexOf('%');
  if (zone >= 0) text = text.slice(0, zone);
  const tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.slice(lastColon + 1).includes('.')) {
    tail.push(...text.slice(lastColon + 1).split('.').map(Number));
    text = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const [head = '', rest] = text.split('::');
  const left = groupsOf(head);
  const right = rest === undefined ? [] : groupsOf(rest);
  const middle = rest === undefined ? [] : Array<string>(8 - left.length - right.length).fill('0');
  const words = [...left, ...middle, ...right].map((g) => parseInt(g, 16));
  const bytes = words.flatMap((w) => [w >> 8, w & 0xff]);
  if (tail.length === 4) bytes.splice(12, 4, ...tail);
  return bytes;
}

/** The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4), if any. */
export function embeddedIpv4(address: string): string | undefined {
  const b = ipv6Bytes(address);
  const zeros = (from: number, to: number) => b.slice(from, to).every((x) => x === 0);
  const quad = (i: number) => b.slice(i, i + 4).join('.');
  if (zeros(0, 10) && b[10] === 0xff && b[11] === 0xff) return quad(12); // ::ffff:a.b.c.d
  if (zeros(0, 12) && !zeros(12, 16) && !(zeros(12, 15) && b[15] === 1)) return quad(12); // ::a.b.c.d
  if (b[0] === 0 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zeros(4, 12)) return quad(12); // 64:ff9b::/96
  if (b[0] === 0x20 && b[1] === 0x02) return quad(2); // 2002:a.b.c.d::/48 (6to4)
  return undefined;
}

/** Whether the policy refuses this IP address (a literal, as `isIP` accepts it). */
export function isRefusedAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return REFUSED.check(address, 'ipv4');
  if (family !== 6) return true;
  const v4 = embeddedIpv4(address);
  if (v4 !== undefined) return REFUSED.check(v4, 'ipv4');
  return REFUSED.check(address.replace(/%.*$/, ''), 'ipv6');
}

const STRICT_IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const DNS_NAME = /^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.?$/;

/**
 * Whether `host` (without brackets or port) is a valid hostname of a Matrix server name:
 * a strict dotted quad, an IPv6 literal, or a DNS name of at most 255 characters whose last
 * label does not look like a number. A last label of digits or `0x...` is how URL parsers
 * and `inet_aton` spot IPv4 in other spellings (`127.1`, `2130706433`, `0x7f000001`,
 * `0177.0.0.1`), so anything of that shape that is not a strict dotted quad is refused.
 */
export function isValidServerHost(host: string, bracketed: boolean): boolean {
  if (bracketed) return isIP(host) === 6 && !host.includes('%');
  if (STRICT_IPV4.test(host)) return true;
  if (host.length > 255 || !DNS_NAME.test(host)) return false;
  const labels = host.replace(/\.$/, '').split('.');
  if (labels.some((l) => l.length > 63)) return false;
  const last = labels.at(-1)!;
  return !/^(\d+|0x[0-9a-f]*)$/i.test(last);
}

export interface AddressPolicy {
  /** Throws AddressRefusedError when `host` is an IP literal the policy refuses. */
  checkLiteral(host: string): void;
  /** A `net.connect` lookup keeping only allowed addresses; undefined when everything is allowed. */
  readonly lookup: LookupFunction | undefined;
}

type LookupImpl = (hostname: string, options: { all: true; family?: number }, cb: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void) => void;

const systemLookup: LookupImpl = (hostname, options, cb) => dnsLookup(hostname, options, cb);

/** The policy for `allowPrivate`; `resolve` replaces the system resolver (tests). */
export function createAddressPolicy(allowPrivate: boolean, resolve: LookupImpl = systemLookup): AddressPolicy {
  if (allowPrivate) return { checkLiteral: () => undefined, lookup: undefined };
  const lookup = ((hostname: string, options: { all?: boolean; family?: number | string }, cb: (...args: unknown[]) => void) => {
    const family = options.family === 'IPv4' ? 4 : options.family === 'IPv6' ? 6 : Number(options.family ?? 0) || 0;
    resolve(hostname, { all: true, ...(family ? { family } : {}) }, (err, addresses) => {
      if (err) return cb(err);
      const allowed = addresses.filter((a) => !isRefusedAddress(a.address));
      if (allowed.length === 0) return cb(new AddressRefusedError(hostname, addresses[0]?.address));
      if (options.all) return cb(null, allowed);
      cb(null, allowed[0]!.address, allowed[0]!.family);
    });
  }) as LookupFunction;
  return {
    checkLiteral(host) {
      if (isIP(host) && isRefusedAddress(host)) throw new AddressRefusedError(host);
    },
    lookup,
  };
}
