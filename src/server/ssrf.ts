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
    [['fc00::', 7], ['fec0::', 10], ['64:ff9b::', 96], ['64:ff9b:1::', 48]]),
];

/** `::ffff:169.254.169.254` is 169.254.169.254 to the kernel. */
function unmap(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m ? m[1]! : ip;
}

/**
 * The name of the range that makes `address` refused under `policy`, or null when it may be fetched.
 * Anything that is not an IP address is refused (callers pass resolved addresses).
 */
export function refusedRange(address: string, policy: UrlPolicy): string | null {
  const ip = unmap(address.replace(/^\[|\]$/g, ''));
  const family = isIP(ip);
  if (family === 0) return 'non-IP';
  const type = family === 4 ? 'ipv4' : 'ipv6';
  for (const r of ALWAYS) if (r.list.check(ip, type)) return r.name;
  if (policy.denyPrivate) for (const r of PRIVATE) if (r.list.check(ip, type)) return r.name;
  return null;
}

/** The host of a URL as an IP literal, or null for a DNS name. */
export function ipLiteralHost(url: URL): string | null {
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return isIP(host) !== 0 ? host : null;
}
