import { describe, expect, it } from 'vitest';
import type { buildConnector } from 'undici';
import { BlockedDestinationError } from '../../src/errors/errors.js';
import {
  addressClass,
  createEgressGuard,
  destinationProblems,
  embeddedIPv4,
  isLoopbackAddress,
  type LookupAddress,
} from '../../src/delivery/egress-guard.js';
import { parseActionDefinition } from '../../src/actions/compile-action.js';

/*
 * Every lookup here is injected: no DNS server is asked and, since each answer is refused before
 * a socket connects, no packet leaves the process. Public addresses appear only in checks that never connect.
 */

/** One address of each class the guard refuses by default. */
const FORBIDDEN: [string, string][] = [
  ['127.0.0.1', 'loopback'],
  ['127.255.255.254', 'loopback'],
  ['::1', 'loopback'],
  ['10.1.2.3', 'private'],
  ['172.16.0.1', 'private'],
  ['172.31.255.255', 'private'],
  ['192.168.1.1', 'private'],
  ['169.254.1.1', 'link-local'],
  ['fe80::1', 'link-local'],
  ['100.64.0.1', 'carrier-grade NAT'],
  ['224.0.0.251', 'multicast'],
  ['ff02::1', 'multicast'],
  ['0.0.0.0', 'unspecified'],
  ['::', 'unspecified'],
  ['255.255.255.255', 'broadcast'],
  ['240.0.0.1', 'reserved'],
  ['192.0.2.10', 'documentation'],
  ['198.51.100.7', 'documentation'],
  ['203.0.113.9', 'documentation'],
  ['2001:db8::1', 'documentation'],
  ['198.18.0.1', 'benchmarking'],
  ['fc00::1', 'unique local (private)'],
  ['fd12:3456::1', 'unique local (private)'],
  ['169.254.169.254', 'cloud metadata'],
  ['169.254.170.2', 'cloud metadata'],
  ['fd00:ec2::254', 'cloud metadata'],
  ['100.100.100.200', 'cloud metadata'],
  ['192.0.0.192', 'cloud metadata'],
  ['168.63.129.16', 'cloud metadata'],
  ['::ffff:127.0.0.1', 'loopback, embedded in IPv6'],
  ['::ffff:7f00:1', 'loopback, embedded in IPv6'],
  ['::ffff:a9fe:a9fe', 'cloud metadata, embedded in IPv6'],
  ['::ffff:0:10.0.0.1', 'private, embedded in IPv6'],
  ['::127.0.0.1', 'loopback, embedded in IPv6'],
  ['64:ff9b::7f00:1', 'loopback, embedded in IPv6'],
  ['64:ff9b::169.254.169.254', 'cloud metadata, embedded in IPv6'],
  ['64:ff9b::c0a8:101', 'private, embedded in IPv6'],
  ['2002:7f00:1::1', 'loopback, embedded in IPv6'],
  ['2001:0:4136:e378::1', 'Teredo tunnel'],
  ['64:ff9b:1::a00:1', 'NAT64 local-use'],
];

/** Public addresses: checked, never connected to. */
const PUBLIC = [
  '93.184.215.14',
  '8.8.8.8',
  '1.1.1.1',
  '2606:4700:4700::1111',
  '::ffff:8.8.8.8',
  '64:ff9b::8.8.8.8',
  '172.32.0.1',
  '100.128.0.1',
];

const fixedLookup =
  (...addresses: string[]) =>
  async (): Promise<LookupAddress[]> =>
    addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));

/**
 * Runs the guard's connector as undici would and returns the error it reports. Belt and braces:
 * the socket is bound to 127.0.0.1, so even a guard that failed to refuse could not reach beyond loopback.
 */
function connectError(connect: buildConnector.connector, hostname: string, port = '1'): Promise<Error | null> {
  return new Promise((resolve) => {
    connect({ hostname, host: `${hostname}:${port}`, protocol: 'http:', port, localAddress: '127.0.0.1' }, (err, socket) => {
      socket?.destroy();
      resolve(err);
    });
  });
}

describe('address classes', () => {
  it.each(FORBIDDEN)('%s is %s', (ip, cls) => {
    expect(addressClass(ip)).toBe(cls);
  });

  it.each(PUBLIC)('%s is public', (ip) => {
    expect(addressClass(ip)).toBeUndefined();
  });

  it('reads the IPv4 address inside mapped, compatible, NAT64 and 6to4 forms', () => {
    expect(embeddedIPv4('::ffff:10.0.0.1')).toBe('10.0.0.1');
    expect(embeddedIPv4('::ffff:0a00:0001')).toBe('10.0.0.1');
    expect(embeddedIPv4('64:ff9b::a9fe:a9fe')).toBe('169.254.169.254');
    expect(embeddedIPv4('2002:c0a8:0101::')).toBe('192.168.1.1');
    expect(embeddedIPv4('::1')).toBeUndefined();
    expect(embeddedIPv4('::')).toBeUndefined();
    expect(embeddedIPv4('2606:4700::1111')).toBeUndefined();
  });

  it('knows loopback for the API bind check', () => {
    expect(isLoopbackAddress('127.0.0.1')).toBe(true);
    expect(isLoopbackAddress('127.8.9.10')).toBe(true);
    expect(isLoopbackAddress('::1')).toBe(true);
    expect(isLoopbackAddress('::ffff:127.0.0.1')).toBe(true);
    expect(isLoopbackAddress('0.0.0.0')).toBe(false);
    expect(isLoopbackAddress('::')).toBe(false);
    expect(isLoopbackAddress('10.0.0.1')).toBe(false);
    expect(isLoopbackAddress('127.evil.example')).toBe(false);
  });
});

describe('the default policy', () => {
  const guard = createEgressGuard({ allowPrivate: false });

  it.each(FORBIDDEN)('refuses %s (%s)', (ip) => {
    expect(guard.isAllowed(ip)).toBe(false);
  });

  it.each(PUBLIC)('allows %s', (ip) => {
    expect(guard.isAllowed(ip)).toBe(true);
  });

  it('refuses what is not an IP address, and a zone id does not hide link-local', () => {
    expect(guard.isAllowed('localhost')).toBe(false);
    expect(guard.isAllowed('')).toBe(false);
    expect(guard.isAllowed('fe80::1%eth0')).toBe(false);
    expect(guard.isAllowed('[::1]')).toBe(false);
  });
});

describe('checkUrl resolves through the injected lookup', () => {
  it.each(FORBIDDEN)('refuses a host that resolves to %s (%s), naming host, address and class', async (ip, cls) => {
    const guard = createEgressGuard({ allowPrivate: false, lookup: fixedLookup(ip) });
    const err = await guard.checkUrl('https://api.partner.test/v1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BlockedDestinationError);
    const b = err as BlockedDestinationError;
    expect(b.reason).toBe('blocked_destination');
    expect(b.retryable).toBe(false);
    expect(b.host).toBe('api.partner.test');
    expect(b.address).toBe(ip);
    expect(b.message).toContain(`host "api.partner.test" resolves to ${ip} (${cls})`);
  });

  it('accepts a host whose every answer is public', async () => {
    const guard = createEgressGuard({ allowPrivate: false, lookup: fixedLookup('93.184.215.14', '2606:4700:4700::1111') });
    await expect(guard.checkUrl('https://api.partner.test/')).resolves.toBeUndefined();
  });

  it('refuses a host when one of several answers is forbidden', async () => {
    const guard = createEgressGuard({ allowPrivate: false, lookup: fixedLookup('93.184.215.14', '10.0.0.7') });
    await expect(guard.checkUrl('https://mixed.partner.test/')).rejects.toThrow(/resolves to 10\.0\.0\.7 \(private\)/);
  });

  it('checks IP literals directly, in every spelling the URL parser accepts, without a lookup', async () => {
    let lookups = 0;
    const guard = createEgressGuard({
      allowPrivate: false,
      lookup: async () => {
        lookups++;
        return [];
      },
    });
    for (const url of [
      'http://127.0.0.1:8080/',
      'http://2130706433/',
      'http://0x7f.1/',
      'http://017700000001/',
      'http://[::1]/',
      'http://[::ffff:127.0.0.1]/',
      'http://[64:ff9b::a9fe:a9fe]/latest/meta-data',
      'http://169.254.169.254/latest/meta-data',
      'http://[fd00:ec2::254]/',
    ]) {
      await expect(guard.checkUrl(url), url).rejects.toBeInstanceOf(BlockedDestinationError);
    }
    await expect(guard.checkUrl('https://8.8.8.8/')).resolves.toBeUndefined();
    expect(lookups).toBe(0);
  });

  it('passes a DNS failure on as it is, not as a refusal', async () => {
    const guard = createEgressGuard({
      allowPrivate: false,
      lookup: async () => {
        throw Object.assign(new Error('getaddrinfo ENOTFOUND nowhere.test'), { code: 'ENOTFOUND' });
      },
    });
    const err = await guard.checkUrl('https://nowhere.test/').catch((e: unknown) => e);
    expect(err).not.toBeInstanceOf(BlockedDestinationError);
    expect((err as { code?: string }).code).toBe('ENOTFOUND');
  });
});

describe('allow list and allowPrivate', () => {
  it('an allowed host name may resolve anywhere; other names resolving there stay refused', async () => {
    const guard = createEgressGuard({ allowPrivate: false, allowHosts: ['Partner.Internal.'], lookup: fixedLookup('10.0.0.5') });
    await expect(guard.checkUrl('http://partner.internal:8080/')).resolves.toBeUndefined();
    await expect(guard.checkUrl('http://other.internal/')).rejects.toBeInstanceOf(BlockedDestinationError);
  });

  it('an allowed IP address or CIDR range allows that address whatever name leads to it', async () => {
    const guard = createEgressGuard({
      allowPrivate: false,
      allowHosts: ['127.0.0.1', '10.20.0.0/16', '[fd00::1]'],
      lookup: fixedLookup('10.20.3.4'),
    });
    expect(guard.isAllowed('127.0.0.1')).toBe(true);
    expect(guard.isAllowed('::ffff:127.0.0.1')).toBe(true);
    expect(guard.isAllowed('127.0.0.2')).toBe(false);
    expect(guard.isAllowed('10.20.255.1')).toBe(true);
    expect(guard.isAllowed('10.21.0.1')).toBe(false);
    expect(guard.isAllowed('fd00::1')).toBe(true);
    expect(guard.isAllowed('fd00::2')).toBe(false);
    await expect(guard.checkUrl('http://db.internal/')).resolves.toBeUndefined();
    await expect(guard.checkUrl('http://127.0.0.1:4010/')).resolves.toBeUndefined();
  });

  it('allowPrivate allows every non-public class except cloud metadata', () => {
    const guard = createEgressGuard({ allowPrivate: true });
    for (const [ip, cls] of FORBIDDEN) {
      expect(guard.isAllowed(ip), `${ip} (${cls})`).toBe(!cls.startsWith('cloud metadata'));
    }
  });

  it('a metadata address is allowed only when the allow list names it', () => {
    expect(createEgressGuard({ allowPrivate: true }).isAllowed('169.254.169.254')).toBe(false);
    expect(createEgressGuard({ allowPrivate: false, allowHosts: ['169.254.169.254'] }).isAllowed('169.254.169.254')).toBe(true);
  });

  it('cloud metadata opens only to an entry naming that exact address: not a range, not allowPrivate, not an allowed name', async () => {
    for (const allowHosts of [['169.254.0.0/16'], ['169.254.169.0/24'], ['0.0.0.0/0'], ['::/0', '0.0.0.0/1', '128.0.0.0/1']]) {
      const guard = createEgressGuard({ allowPrivate: true, allowHosts });
      expect(guard.isAllowed('169.254.169.254'), allowHosts.join()).toBe(false);
      expect(guard.isAllowed('169.254.10.1'), allowHosts.join()).toBe(true);
    }
    const named = createEgressGuard({ allowPrivate: false, allowHosts: ['metadata.internal'], lookup: fixedLookup('169.254.169.254') });
    await expect(named.checkUrl('http://metadata.internal/')).rejects.toBeInstanceOf(BlockedDestinationError);
    expect(await connectError(named.connector(), 'metadata.internal')).toBeInstanceOf(BlockedDestinationError);
    const exact = createEgressGuard({ allowPrivate: false, allowHosts: ['169.254.169.254'], lookup: fixedLookup('169.254.169.254') });
    await expect(exact.checkUrl('http://metadata.internal/')).resolves.toBeUndefined();
    expect(exact.isAllowed('169.254.169.253')).toBe(false);
  });

  it.each(['10.0.0.0/', '10.0.0.0/ 8', '10.0.0.0/+8', '10.0.0.0/8.0', '10.0.0.0/0x8', '10.0.0.0/1e1', '::/', 'fd00::/1280'])(
    'refuses the CIDR entry "%s" instead of reading it as another range',
    (entry) => {
      expect(() => createEgressGuard({ allowPrivate: false, allowHosts: [entry] })).toThrow(
        /EGRESS_ALLOW_HOSTS: .* is not a valid CIDR range/,
      );
    },
  );

  it('refuses an allow list entry it cannot read', () => {
    expect(() => createEgressGuard({ allowPrivate: false, allowHosts: ['http://x.test'] })).toThrow(/EGRESS_ALLOW_HOSTS/);
    expect(() => createEgressGuard({ allowPrivate: false, allowHosts: ['10.0.0.0/33'] })).toThrow(/CIDR/);
    expect(() => createEgressGuard({ allowPrivate: false, allowHosts: ['*.internal'] })).toThrow(/EGRESS_ALLOW_HOSTS/);
  });
});

describe('the connector checks the address it connects to', () => {
  it.each(FORBIDDEN)('refuses %s (%s) when the lookup at connect time answers it', async (ip) => {
    let lookups = 0;
    const guard = createEgressGuard({
      allowPrivate: false,
      lookup: async () => {
        lookups++;
        return fixedLookup(ip)();
      },
    });
    const err = await connectError(guard.connector(), 'api.partner.test');
    expect(err).toBeInstanceOf(BlockedDestinationError);
    expect((err as BlockedDestinationError).address).toBe(ip);
    expect(lookups).toBe(1);
  });

  it('refuses an IP literal host without a lookup (net.connect would not look it up)', async () => {
    let lookups = 0;
    const guard = createEgressGuard({
      allowPrivate: false,
      lookup: async () => {
        lookups++;
        return [];
      },
    });
    for (const host of ['127.0.0.1', '::1', '::ffff:127.0.0.1', '169.254.169.254', '10.0.0.1']) {
      const err = await connectError(guard.connector(), host);
      expect(err, host).toBeInstanceOf(BlockedDestinationError);
    }
    expect(lookups).toBe(0);
  });

  it('DNS rebinding: public when checked at save time, private at connect time, refused at connect', async () => {
    const answers = ['93.184.215.14', '127.0.0.1'];
    const guard = createEgressGuard({ allowPrivate: false, lookup: async () => fixedLookup(answers.shift() ?? '127.0.0.1')() });
    await expect(guard.checkUrl('http://rebind.partner.test/')).resolves.toBeUndefined();
    const err = await connectError(guard.connector(), 'rebind.partner.test');
    expect(err).toBeInstanceOf(BlockedDestinationError);
    expect((err as BlockedDestinationError).address).toBe('127.0.0.1');
  });
});

describe('the check when an action is saved', () => {
  const lookup = async (host: string): Promise<LookupAddress[]> => {
    if (host === 'internal.partner.test') return [{ address: '10.0.0.8', family: 4 }];
    if (host === 'public.partner.test') return [{ address: '93.184.215.14', family: 4 }];
    if (host === 'slow.partner.test') return new Promise<never>(() => undefined);
    throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  };
  const guard = createEgressGuard({ allowPrivate: false, lookup });
  const def = (url: string, auth: Record<string, unknown> = { type: 'none' }) =>
    parseActionDefinition({ id: 'a', name: 'a', endpoint: { url, method: 'POST' }, auth });

  it('names endpoint.url for a forbidden literal or a host resolving to a forbidden address, without the address', async () => {
    const refused: { field: string; address: string; reason: string }[] = [];
    const log = (r: { field: string; address: string; reason: string }) => void refused.push(r);
    expect(await destinationProblems(def('http://127.0.0.1:4010/x'), guard, 3000, log)).toEqual([
      { path: 'endpoint.url', message: expect.stringMatching(/^127\.0\.0\.1 \(loopback\): refused by the egress policy/) },
    ]);
    const internal = await destinationProblems(def('https://internal.partner.test/'), guard, 3000, log);
    expect(internal).toEqual([
      { path: 'endpoint.url', message: 'destination not allowed by the egress policy (EGRESS_ALLOW_HOSTS, EGRESS_ALLOW_PRIVATE)' },
    ]);
    expect(JSON.stringify(internal)).not.toContain('10.0.0.8');
    // The operator's log has what the answer leaves out.
    expect(refused).toEqual([
      { actionId: 'a', field: 'endpoint.url', host: '127.0.0.1', address: '127.0.0.1', reason: expect.stringContaining('(loopback)') },
      {
        actionId: 'a',
        field: 'endpoint.url',
        host: 'internal.partner.test',
        address: '10.0.0.8',
        reason: expect.stringContaining('resolves to 10.0.0.8 (private)'),
      },
    ]);
  });

  it('names the token URL of oauth2ClientCredentials and customToken', async () => {
    const oauth = def('https://public.partner.test/', {
      type: 'oauth2ClientCredentials',
      tokenUrl: 'http://169.254.169.254/token',
      clientId: 'c',
      clientSecret: { env: 'S' },
    });
    expect((await destinationProblems(oauth, guard)).map((p) => p.path)).toEqual(['auth.tokenUrl']);
    const custom = def('http://[::1]/', {
      type: 'customToken',
      request: { url: 'https://internal.partner.test/token', method: 'POST' },
      tokenPath: 'access_token',
      inject: { as: 'bearer' },
    });
    expect((await destinationProblems(custom, guard)).map((p) => p.path)).toEqual(['endpoint.url', 'auth.request.url']);
  });

  it('does not block saving on a host that does not resolve, or not in time', async () => {
    expect(await destinationProblems(def('https://unknown.partner.test/'), guard)).toEqual([]);
    expect(await destinationProblems(def('https://slow.partner.test/'), guard, 50)).toEqual([]);
    expect(await destinationProblems(def('https://public.partner.test/'), guard)).toEqual([]);
  });
});
