import { BlockList, isIP, type LookupFunction } from 'node:net';
import { lookup as dnsLookup } from 'node:dns/promises';
import { buildConnector } from 'undici';
import type { ActionDefinition } from '../actions/action-schema.js';
import { BlockedDestinationError, type FieldProblem } from '../errors/errors.js';

/** One resolved address, as `dns.lookup(..., { all: true })` gives it. */
export interface LookupAddress {
  address: string;
  family: 4 | 6;
}

/** Resolves a host name to every address it has; injectable so tests never ask a real DNS server. */
export type EgressLookup = (hostname: string) => Promise<LookupAddress[]>;

export interface EgressPolicy {
  /** Allow loopback, private, link-local and other non-public addresses (never cloud metadata). @defaultValue false */
  allowPrivate: boolean;
  /** Host names, IP addresses or CIDR ranges allowed even when not public (EGRESS_ALLOW_HOSTS). */
  allowHosts?: readonly string[] | undefined;
  /** @defaultValue dns.promises.lookup with all: true */
  lookup?: EgressLookup | undefined;
}

/** Client certificate, key and CA for mTLS, passed through to `tls.connect`. */
export interface EgressTlsOptions {
  cert?: string | Buffer | undefined;
  key?: string | Buffer | undefined;
  ca?: string | Buffer | undefined;
}

export interface EgressGuard {
  /** Whether a connection to this IP address is allowed (false for anything that is not an IP address). */
  isAllowed(ip: string): boolean;
  /** Resolves the URL's host and checks every address; throws BlockedDestinationError, or the DNS error. */
  checkUrl(url: string | URL): Promise<void>;
  /**
   * An undici `connect` function whose DNS lookup checks every resolved address, so the address
   * actually connected to is the one checked (DNS rebinding cannot slip past); an IP literal is checked directly.
   */
  connector(tls?: EgressTlsOptions, opts?: { timeoutMs?: number }): buildConnector.connector;
}

/*
 * Address classes refused unless the policy allows them. First match names the class.
 * Sources: IANA IPv4/IPv6 special-purpose address registries (RFC 6890 and successors).
 */
const V4_CLASSES: [string, number, string][] = [
  ['0.0.0.0', 8, 'unspecified'],
  ['10.0.0.0', 8, 'private'],
  ['100.64.0.0', 10, 'carrier-grade NAT'],
  ['127.0.0.0', 8, 'loopback'],
  ['169.254.0.0', 16, 'link-local'],
  ['172.16.0.0', 12, 'private'],
  ['192.0.0.0', 24, 'IETF protocol assignments'],
  ['192.0.2.0', 24, 'documentation'],
  ['192.88.99.0', 24, '6to4 relay anycast'],
  ['192.168.0.0', 16, 'private'],
  ['198.18.0.0', 15, 'benchmarking'],
  ['198.51.100.0', 24, 'documentation'],
  ['203.0.113.0', 24, 'documentation'],
  ['224.0.0.0', 4, 'multicast'],
  ['255.255.255.255', 32, 'broadcast'],
  ['240.0.0.0', 4, 'reserved'],
];

const V6_CLASSES: [string, number, string][] = [
  ['::', 128, 'unspecified'],
  ['::1', 128, 'loopback'],
  ['64:ff9b:1::', 48, 'NAT64 local-use'],
  ['100::', 64, 'discard-only'],
  ['2001::', 32, 'Teredo tunnel'],
  ['2001:2::', 48, 'benchmarking'],
  ['2001:db8::', 32, 'documentation'],
  ['3fff::', 20, 'documentation'],
  ['fc00::', 7, 'unique local (private)'],
  ['fe80::', 10, 'link-local'],
  ['fec0::', 10, 'site-local'],
  ['ff00::', 8, 'multicast'],
];

/**
 * Cloud instance metadata and platform endpoints: refused even with EGRESS_ALLOW_PRIVATE, since
 * they hand out the machine's own credentials. Only EGRESS_ALLOW_HOSTS naming the address allows one.
 * AWS/GCP/Azure/DigitalOcean/Oracle 169.254.169.254 (and AWS services beside it), ECS/EKS
 * 169.254.170.x, AWS IPv6 fd00:ec2::/64, Alibaba 100.100.100.200, Oracle 192.0.0.192, Azure wireserver 168.63.129.16.
 */
const METADATA: [string, number, 'ipv4' | 'ipv6'][] = [
  ['169.254.169.0', 24, 'ipv4'],
  ['169.254.170.0', 24, 'ipv4'],
  ['100.100.100.200', 32, 'ipv4'],
  ['192.0.0.192', 32, 'ipv4'],
  ['168.63.129.16', 32, 'ipv4'],
  ['fd00:ec2::', 64, 'ipv6'],
];

function blockListOf(entries: [string, number][], type: 'ipv4' | 'ipv6'): BlockList {
  const list = new BlockList();
  for (const [net, prefix] of entries) list.addSubnet(net, prefix, type);
  return list;
}

const v4Lists = V4_CLASSES.map(([net, prefix, label]) => ({ label, list: blockListOf([[net, prefix]], 'ipv4') }));
const v6Lists = V6_CLASSES.map(([net, prefix, label]) => ({ label, list: blockListOf([[net, prefix]], 'ipv6') }));
const metadataList = new BlockList();
for (const [net, prefix, type] of METADATA) metadataList.addSubnet(net, prefix, type);

/** Strips brackets, a zone id, a trailing dot and case, so one host has one spelling. */
export function normalizeHost(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  const zone = h.indexOf('%');
  if (zone >= 0 && isIP(h.slice(0, zone)) === 6) h = h.slice(0, zone);
  if (h.endsWith('.') && isIP(h) === 0) h = h.slice(0, -1);
  return h;
}

/** The 16 bytes of a valid IPv6 address (dotted-quad tail included). */
function ipv6Bytes(ip: string): Uint8Array {
  const bytes = new Uint8Array(16);
  let text = ip;
  const tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.slice(lastColon + 1).includes('.')) {
    const quad = text
      .slice(lastColon + 1)
      .split('.')
      .map(Number);
    tail.push(((quad[0] ?? 0) << 8) | (quad[1] ?? 0), ((quad[2] ?? 0) << 8) | (quad[3] ?? 0));
    text = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const [head, rest] = text.includes('::') ? (text.split('::') as [string, string]) : [text, undefined];
  const headGroups = head === '' ? [] : head.split(':');
  const restGroups = rest === undefined || rest === '' ? [] : rest.split(':');
  const groups = [...headGroups, ...Array<string>(8 - headGroups.length - restGroups.length).fill('0'), ...restGroups].map((g) =>
    parseInt(g, 16),
  );
  if (tail.length === 2) groups.splice(6, 2, tail[0] as number, tail[1] as number);
  groups.forEach((g, i) => {
    bytes[i * 2] = g >> 8;
    bytes[i * 2 + 1] = g & 0xff;
  });
  return bytes;
}

const quad = (b: Uint8Array, at: number) => `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
const zero = (b: Uint8Array, from: number, to: number) => b.subarray(from, to).every((x) => x === 0);

/** The IPv4 address an IPv6 address carries (mapped, translated, compatible, NAT64 or 6to4), if any. */
export function embeddedIPv4(ip: string): string | undefined {
  const b = ipv6Bytes(ip);
  // ::ffff:a.b.c.d (mapped) and ::ffff:0:a.b.c.d (SIIT translated)
  if (zero(b, 0, 10) && b[10] === 0xff && b[11] === 0xff) return quad(b, 12);
  if (zero(b, 0, 8) && b[8] === 0xff && b[9] === 0xff && zero(b, 10, 12)) return quad(b, 12);
  // ::a.b.c.d (deprecated compatible form); :: and ::1 stay IPv6
  if (zero(b, 0, 12) && !(zero(b, 12, 15) && (b[15] ?? 0) <= 1)) return quad(b, 12);
  // 64:ff9b::/96, the NAT64 well-known prefix
  if (b[0] === 0x00 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zero(b, 4, 12)) return quad(b, 12);
  // 2002:AABB:CCDD::/48, 6to4
  if (b[0] === 0x20 && b[1] === 0x02) return quad(b, 2);
  return undefined;
}

interface AddressClass {
  label: string;
  /** Cloud metadata: refused even with allowPrivate. */
  metadata: boolean;
}

function classify(ip: string): AddressClass | undefined {
  const addr = normalizeHost(ip);
  const family = isIP(addr);
  if (family === 0) return { label: 'not an IP address', metadata: false };
  if (family === 6) {
    const v4 = embeddedIPv4(addr);
    if (v4 !== undefined) {
      const inner = classify(v4);
      return inner && { label: `${inner.label}, embedded in IPv6`, metadata: inner.metadata };
    }
  }
  const type = family === 4 ? 'ipv4' : 'ipv6';
  if (metadataList.check(addr, type)) return { label: 'cloud metadata', metadata: true };
  const label = (family === 4 ? v4Lists : v6Lists).find((c) => c.list.check(addr, type))?.label;
  return label === undefined ? undefined : { label, metadata: false };
}

/**
 * Why an address is not public: its class ("loopback", "private", "cloud metadata"...), or
 * undefined for a public address. A string that is not an IP address is "not an IP address".
 */
export function addressClass(ip: string): string | undefined {
  return classify(ip)?.label;
}

/** True for 127.0.0.0/8, ::1 and their IPv4-mapped forms: what "bind to loopback only" means. */
export function isLoopbackAddress(ip: string): boolean {
  const c = addressClass(ip);
  return c === 'loopback' || c === 'loopback, embedded in IPv6';
}

const HOST_NAME = /^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$/;

const defaultLookup: EgressLookup = async (hostname) =>
  (await dnsLookup(hostname, { all: true, verbatim: true })).map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));

function notFound(hostname: string): Error {
  return Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND', hostname });
}

/** The EGRESS_ALLOW_HOSTS entries, sorted into host names, address ranges and single addresses. */
function parseAllowHosts(allowHosts: readonly string[]): { names: Set<string>; addresses: BlockList; exact: Set<string> } {
  const allowedNames = new Set<string>();
  const allowedAddresses = new BlockList();
  /** IP addresses named one by one (not ranges), in normalized spelling. */
  const allowedExact = new Set<string>();
  for (const raw of allowHosts) {
    const entry = normalizeHost(raw);
    const slash = entry.indexOf('/');
    if (slash > 0) {
      const net = entry.slice(0, slash);
      const bits = entry.slice(slash + 1);
      // Digits only: Number('') is 0, so "10.0.0.0/" would otherwise allow every address (/0).
      const prefix = /^\d{1,3}$/.test(bits) ? Number(bits) : NaN;
      const family = isIP(net);
      if (family === 0 || !Number.isInteger(prefix) || prefix < 0 || prefix > (family === 4 ? 32 : 128)) {
        throw new Error(`EGRESS_ALLOW_HOSTS: "${raw}" is not a valid CIDR range`);
      }
      allowedAddresses.addSubnet(net, prefix, family === 4 ? 'ipv4' : 'ipv6');
    } else if (isIP(entry) !== 0) {
      allowedAddresses.addAddress(entry, isIP(entry) === 4 ? 'ipv4' : 'ipv6');
      allowedNames.add(entry);
      allowedExact.add(entry);
    } else if (HOST_NAME.test(entry)) {
      allowedNames.add(entry);
    } else {
      throw new Error(`EGRESS_ALLOW_HOSTS: "${raw}" is not a host name, an IP address or a CIDR range`);
    }
  }
  return { names: allowedNames, addresses: allowedAddresses, exact: allowedExact };
}

/** The error of a refused destination, saying how to allow it. */
function blocked(host: string, address: string, cls: string): BlockedDestinationError {
  const how = cls.startsWith('cloud metadata')
    ? 'refused by the egress policy even with EGRESS_ALLOW_PRIVATE; only EGRESS_ALLOW_HOSTS naming it allows it'
    : 'refused by the egress policy; allow it with EGRESS_ALLOW_HOSTS or EGRESS_ALLOW_PRIVATE';
  const subject = host === address ? address : `host "${host}" resolves to ${address}`;
  return new BlockedDestinationError(`${subject} (${cls}): ${how}`, host, address);
}

/**
 * Builds the egress guard of a process from its policy. Throws on an EGRESS_ALLOW_HOSTS entry that
 * is neither a host name, an IP address nor a CIDR range.
 */
export function createEgressGuard(policy: EgressPolicy): EgressGuard {
  const lookup = policy.lookup ?? defaultLookup;
  const { names: allowedNames, addresses: allowedAddresses, exact: allowedExact } = parseAllowHosts(policy.allowHosts ?? []);

  function refusal(ip: string): string | undefined {
    const addr = normalizeHost(ip);
    const family = isIP(addr);
    if (family === 0) return 'not an IP address';
    const cls = classify(addr);
    // Cloud metadata hands out the machine's own credentials: only an entry naming that very address
    // opens it, not a range that happens to cover it, nor a host name that resolves to it.
    if (cls?.metadata) return allowedExact.has(addr) ? undefined : cls.label;
    if (allowedAddresses.check(addr, family === 4 ? 'ipv4' : 'ipv6')) return undefined;
    if (cls === undefined) return undefined;
    if (policy.allowPrivate) return undefined;
    return cls.label;
  }

  /** Every address of the host, each checked; an allowed host name skips the checks. */
  async function resolveChecked(hostname: string): Promise<LookupAddress[]> {
    const host = normalizeHost(hostname);
    const family = isIP(host);
    if (family !== 0) {
      const cls = allowedNames.has(host) ? undefined : refusal(host);
      if (cls !== undefined) throw blocked(host, host, cls);
      return [{ address: host, family: family === 6 ? 6 : 4 }];
    }
    const addresses = await lookup(host);
    if (addresses.length === 0) throw notFound(host);
    const named = allowedNames.has(host);
    // One forbidden answer refuses the host: a name that mixes public and private answers is a rebinding tell.
    // An allowed name skips the checks, except that of cloud metadata.
    for (const a of addresses) {
      const cls = refusal(a.address);
      if (cls !== undefined && (!named || cls.startsWith('cloud metadata'))) throw blocked(host, a.address, cls);
    }
    return addresses;
  }

  const checkedLookup: LookupFunction = (hostname, options, callback) => {
    resolveChecked(hostname).then(
      (addresses) => {
        const wanted = options.family === 4 || options.family === 6 ? options.family : 0;
        const usable = wanted === 0 ? addresses : addresses.filter((a) => a.family === wanted);
        const first = usable[0];
        if (!first) callback(notFound(hostname), '', 0);
        else if (options.all) callback(null, usable);
        else callback(null, first.address, first.family);
      },
      (err: unknown) => callback(err instanceof Error ? err : new Error(String(err)), '', 0),
    );
  };

  return {
    isAllowed: (ip) => refusal(ip) === undefined,
    async checkUrl(url) {
      const u = typeof url === 'string' ? new URL(url) : url;
      await resolveChecked(u.hostname);
    },
    connector(tls = {}, opts = {}) {
      const connect = buildConnector({ timeout: opts.timeoutMs ?? 10_000, ...tls, lookup: checkedLookup });
      return (options, callback) => {
        const host = normalizeHost(options.hostname);
        // net.connect does not look an IP literal up, so the lookup above would never see it.
        if (isIP(host) !== 0 && !allowedNames.has(host)) {
          const cls = refusal(host);
          if (cls !== undefined) {
            const err = blocked(host, host, cls);
            queueMicrotask(() => callback(err, null));
            return;
          }
        }
        connect(options, callback);
      };
    },
  };
}

/** Every URL an action sends requests to, with the path of its field: the endpoint and a token endpoint. */
export function actionDestinations(def: ActionDefinition): { path: string; url: string }[] {
  const out = [{ path: 'endpoint.url', url: def.endpoint.url }];
  if (def.auth.type === 'oauth2ClientCredentials') out.push({ path: 'auth.tokenUrl', url: def.auth.tokenUrl });
  if (def.auth.type === 'customToken') out.push({ path: 'auth.request.url', url: def.auth.request.url });
  return out;
}

/** What a refused save says, without the address the host resolved to. */
export const EGRESS_REFUSAL = 'destination not allowed by the egress policy (EGRESS_ALLOW_HOSTS, EGRESS_ALLOW_PRIVATE)';

/** How long saving an action waits for DNS before accepting a host it could not resolve. */
export const SAVE_LOOKUP_TIMEOUT_MS = 3000;

/**
 * The egress check of an action being saved: a forbidden IP literal, or a host that resolves to a
 * forbidden address, is a problem naming the field. A host that does not resolve (yet), or not in
 * time, does not block saving: the connector checks again at every connection.
 */
export async function destinationProblems(
  def: ActionDefinition,
  guard: EgressGuard,
  timeoutMs = SAVE_LOOKUP_TIMEOUT_MS,
  onRefused: (refused: { actionId: string; field: string; host: string; address: string; reason: string }) => void = () => undefined,
): Promise<FieldProblem[]> {
  const checks = actionDestinations(def).map(async ({ path, url }): Promise<FieldProblem | undefined> => {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), timeoutMs);
    });
    try {
      await Promise.race([guard.checkUrl(url), late]);
      return undefined;
    } catch (err: unknown) {
      if (!(err instanceof BlockedDestinationError)) return undefined;
      // The answer does not say what a name resolves to (an oracle for the internal network's
      // layout); the log does, for the operator. An address written in the URL is no news to its author.
      onRefused({ actionId: def.id, field: path, host: err.host ?? '', address: err.address ?? '', reason: err.message });
      return { path, message: err.host !== undefined && err.host === err.address ? err.message : EGRESS_REFUSAL };
    } finally {
      clearTimeout(timer);
    }
  });
  return (await Promise.all(checks)).filter((p): p is FieldProblem => p !== undefined);
}
