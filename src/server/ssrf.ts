/**
 * Which addresses the server may fetch input files from. Input URLs come from whoever can send a request, so
 * a URL must not reach into the machine's own network: link-local and cloud-metadata addresses (where cloud
 * credentials are served) are always refused; loopback and private ranges are refused too when the server is
 * internet-facing (`denyPrivate`, set by --deny-private-urls or FRAMEPACK_DENY_PRIVATE_URLS=1). Off by
 * default because platforms such as Replicate serve inputs from cluster-internal hosts.
 *
 * The check runs on every resolved address before connecting (see input-files.ts), and again after each
 * redirect, so neither DNS names nor redirects can smuggle a refused address past it.
 */
import { BlockList, isIP } from 'node:net';
import { appError, type AppError } from '../errors.js';

export interface UrlPolicy {
  denyPrivate: boolean;
}

interface Range { name: string; list: BlockList }

function ranges(name: string, v4: [string, number][], v6: [string, number][]): Range {
  const list = new BlockList();
  for (const [net, prefix] of v4) list.addSubnet(net, prefix, 'ipv4');
  for (const [net, prefix] of v6) list.addSubnet(net, prefix, 'ipv6');
  return { name, list };
}

/** Never fetched from. */
const ALWAYS: Range[] = [
  ranges('cloud-metadata', [['100.100.100.200', 32]], [['fd00:ec2::254', 128]]),
  ranges('link-local', [['169.254.0.0', 16]], [['fe80::', 10]]),
  ranges('multicast', [['224.0.0.0', 4], ['255.255.255.255', 32]], [['ff00::', 8]]),
];

/** Fetched from unless the policy denies private addresses. */
const PRIVATE: Range[] = [
  ranges('loopback', [['127.0.0.0', 8]], [['::1', 128]]),
  ranges('unspecified', [['0.0.0.0', 8]], [['::', 128]]),
  ranges('private', [['10.0.0.0', 8], ['172.16.0.0', 12], ['192.168.0.0', 16], ['100.64.0.0', 10], ['198.18.0.0', 15], ['192.0.0.0', 24], ['240.0.0.0', 4]],
    [['fc00::', 7], ['fec0::', 10], ['64:ff9b:1::', 48]]),
];

/** The eight 16-bit groups of an IPv6 address (a trailing dotted quad allowed). */
function ipv6Groups(ip: string): number[] {
  let text = ip.toLowerCase().replace(/%.*$/, '');
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (quad) {
    const [a, b, c, d] = quad.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, quad.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const parse = (part: string) => (part === '' ? [] : part.split(':').map((h) => parseInt(h, 16)));
  const left = parse(head);
  const right = tail === undefined ? [] : parse(tail);
  return [...left, ...new Array(8 - left.length - right.length).fill(0), ...right];
}

const dotted = (hi: number, lo: number) => `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;

/**
 * The IPv4 address an IPv6 address reaches, for the forms that carry one: IPv4-mapped (::ffff:a.b.c.d),
 * IPv4-translated (::ffff:0:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96), 6to4 (2002::/16)
 * and Teredo (2001::/32, the client address inverted). A route through any of them reaches that IPv4 host,
 * so it is judged as that host.
 */
export function embeddedIpv4(ip: string): string | null {
  const g = ipv6Groups(ip);
  const zeros = (from: number, to: number) => g.slice(from, to).every((x) => x === 0);
  if (zeros(0, 5) && g[5] === 0xffff) return dotted(g[6]!, g[7]!);
  if (zeros(0, 4) && g[4] === 0xffff && g[5] === 0) return dotted(g[6]!, g[7]!);
  if (zeros(0, 6) && (g[6] !== 0 || g[7]! > 1)) return dotted(g[6]!, g[7]!);
  if (g[0] === 0x64 && g[1] === 0xff9b && zeros(2, 6)) return dotted(g[6]!, g[7]!);
  if (g[0] === 0x2002) return dotted(g[1]!, g[2]!);
  if (g[0] === 0x2001 && g[1] === 0) return dotted(g[6]! ^ 0xffff, g[7]! ^ 0xffff);
  return null;
}

function check(ip: string, type: 'ipv4' | 'ipv6', policy: UrlPolicy): string | null {
  for (const r of ALWAYS) if (r.list.check(ip, type)) return r.name;
  if (policy.denyPrivate) for (const r of PRIVATE) if (r.list.check(ip, type)) return r.name;
  return null;
}

/**
 * The name of the range that makes `address` refused under `policy`, or null when it may be fetched.
 * Anything that is not an IP address is refused (callers pass resolved addresses).
 */
export function refusedRange(address: string, policy: UrlPolicy): string | null {
  const ip = address.replace(/^\[|\]$/g, '');
  const family = isIP(ip);
  if (family === 0) return 'non-IP';
  if (family === 4) return check(ip, 'ipv4', policy);
  const v4 = embeddedIpv4(ip);
  return (v4 !== null ? check(v4, 'ipv4', policy) : null) ?? check(ip, 'ipv6', policy);
}

/** The error for a URL whose host is `address`, refused as `range`. */
export function refusal(url: string, address: string, range: string): AppError {
  return appError('URL_BLOCKED', { url, address, range: `${/^[aeiou]/i.test(range) ? 'an' : 'a'} ${range}` });
}

/** The host of a URL as an IP literal, or null for a DNS name. */
export function ipLiteralHost(url: URL): string | null {
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return isIP(host) !== 0 ? host : null;
}
