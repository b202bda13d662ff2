import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { buildConnector } from 'undici';
import { parseActionDefinition } from '../../src/actions/compile-action.js';
import {
  actionDestinations,
  addressClass,
  createEgressGuard,
  embeddedIPv4,
  normalizeHost,
  type LookupAddress,
} from '../../src/delivery/egress-guard.js';
import { BlockedDestinationError } from '../../src/errors/errors.js';

/*
 * The egress guard's parsing and its less travelled paths, each expected value written out: host
 * spellings, the IPv4 inside IPv6 forms byte by byte, the rarer address classes, allow-list
 * entries, refusal messages, a lookup with no answer, and connections that are allowed (to a
 * server of this test on loopback; every other answer is refused before a socket opens).
 */

const lookupOf =
  (...addresses: string[]) =>
  (): Promise<LookupAddress[]> =>
    Promise.resolve(addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 })));

async function rejection(p: Promise<unknown>): Promise<Error> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(Error);
  return err as Error;
}

describe('normalizeHost', () => {
  it.each([
    [' Api.Example.COM. ', 'api.example.com'],
    ['[::1]', '::1'],
    ['[FE80::1%eth0]', 'fe80::1'],
    ['fe80::1%25eth0', 'fe80::1'],
    ['host%name', 'host%name'],
    ['[half', '[half'],
    ['half]', 'half]'],
    ['127.0.0.1', '127.0.0.1'],
  ])('%j is %j', (raw, normalized) => {
    expect(normalizeHost(raw)).toBe(normalized);
  });
});

describe('embeddedIPv4', () => {
  it.each([
    ['0:0:0:0:0:ffff:a00:1', '10.0.0.1'],
    ['::ffff:0:a00:1', '10.0.0.1'],
    ['::ffff:0:10.0.0.1', '10.0.0.1'],
    ['::0.0.1.1', '0.0.1.1'],
    ['::2', '0.0.0.2'],
    ['64:ff9b::a00:1', '10.0.0.1'],
    ['64:ff9b::10.0.0.1', '10.0.0.1'],
    ['2002:a00:1::', '10.0.0.1'],
    ['2002:a00:1:1234::1', '10.0.0.1'],
  ])('%s carries %s', (ip, v4) => {
    expect(embeddedIPv4(ip)).toBe(v4);
  });

  it.each([
    '::0.0.0.1',
    '0:0:0:0:1:ffff:a00:1',
    '::fffe:a00:1',
    '::feff:a00:1',
    '2001::ff:0:0',
    '0:0:0:1:ffff:0:a00:1',
    '::feff:0:a00:1',
    '::fffe:0:a00:1',
    '::ffff:1:a00:1',
    '164:ff9b::a00:1',
    '64:fe9b::a00:1',
    '64:ff9a::a00:1',
    '1:ff9b::a00:1',
    '1::a00:1',
    '2001:db8::10.0.0.1',
    '2003:a00:1::',
  ])('%s carries none', (ip) => {
    expect(embeddedIPv4(ip)).toBeUndefined();
  });
});

describe('address classes', () => {
  it.each([
    ['192.0.0.1', 'IETF protocol assignments'],
    ['192.88.99.1', '6to4 relay anycast'],
    ['100::1', 'discard-only'],
    ['2001:2::1', 'benchmarking'],
    ['3fff::1', 'documentation'],
    ['fec0::1', 'site-local'],
    ['fe80::1', 'link-local'],
    ['localhost', 'not an IP address'],
    ['', 'not an IP address'],
  ])('%s is %s', (ip, cls) => {
    expect(addressClass(ip)).toBe(cls);
  });

  it('allowPrivate does not allow what is not an IP address', () => {
    const guard = createEgressGuard({ allowPrivate: true });
    expect(guard.isAllowed('localhost')).toBe(false);
    expect(guard.isAllowed('10.0.0.1')).toBe(true);
  });
});

describe('allow-list entries', () => {
  it('takes full-length CIDR ranges and IPv6 ranges longer than /32', () => {
    const guard = createEgressGuard({ allowPrivate: false, allowHosts: ['10.0.0.1/32', 'fd00::/64', '::1/128'] });
    expect(guard.isAllowed('10.0.0.1')).toBe(true);
    expect(guard.isAllowed('10.0.0.2')).toBe(false);
    expect(guard.isAllowed('fd00::5')).toBe(true);
    expect(guard.isAllowed('fd00:0:0:1::5')).toBe(false);
    expect(guard.isAllowed('::1')).toBe(true);
  });

  it('refuses entries it cannot read, saying which kind was expected', () => {
    const refusal = (entry: string) => {
      try {
        createEgressGuard({ allowPrivate: false, allowHosts: [entry] });
      } catch (err) {
        return (err as Error).message;
      }
      return 'accepted';
    };
    expect(refusal('/8')).toBe('EGRESS_ALLOW_HOSTS: "/8" is not a host name, an IP address or a CIDR range');
    expect(refusal('partner.test/8')).toBe('EGRESS_ALLOW_HOSTS: "partner.test/8" is not a valid CIDR range');
    expect(refusal('10.0.0.0/33')).toBe('EGRESS_ALLOW_HOSTS: "10.0.0.0/33" is not a valid CIDR range');
    expect(refusal('10.0.0.0/')).toBe('EGRESS_ALLOW_HOSTS: "10.0.0.0/" is not a valid CIDR range');
    expect(refusal('bad host')).toBe('EGRESS_ALLOW_HOSTS: "bad host" is not a host name, an IP address or a CIDR range');
    expect(refusal(`${'a'.repeat(60)}.${'b'.repeat(60)}.${'c'.repeat(60)}.${'d'.repeat(60)}.${'e'.repeat(60)}.example`)).toBe(
      `EGRESS_ALLOW_HOSTS: "${'a'.repeat(60)}.${'b'.repeat(60)}.${'c'.repeat(60)}.${'d'.repeat(60)}.${'e'.repeat(60)}.example" is not a host name, an IP address or a CIDR range`,
    );
    expect(refusal('api.eu.partner.test')).toBe('accepted');
    expect(refusal('2001:db8::/48')).toBe('accepted');
  });

  it('a named host of several labels is allowed wherever it resolves', async () => {
    const guard = createEgressGuard({ allowPrivate: false, allowHosts: ['api.eu.partner.test'], lookup: lookupOf('10.1.2.3') });
    await expect(guard.checkUrl('https://api.eu.partner.test/')).resolves.toBeUndefined();
  });
});

describe('refusals', () => {
  it('cloud metadata says that allowPrivate does not open it, embedded in IPv6 too; other classes name both settings', async () => {
    const guard = createEgressGuard({ allowPrivate: true });
    expect((await rejection(guard.checkUrl('http://169.254.169.254/latest'))).message).toBe(
      '169.254.169.254 (cloud metadata): refused by the egress policy even with EGRESS_ALLOW_PRIVATE; only EGRESS_ALLOW_HOSTS naming it allows it',
    );
    expect((await rejection(guard.checkUrl('http://[::ffff:169.254.169.254]/'))).message).toBe(
      '::ffff:a9fe:a9fe (cloud metadata, embedded in IPv6): refused by the egress policy even with EGRESS_ALLOW_PRIVATE; only EGRESS_ALLOW_HOSTS naming it allows it',
    );
    const strict = createEgressGuard({ allowPrivate: false, lookup: lookupOf('10.0.0.1') });
    expect((await rejection(strict.checkUrl('https://api.partner.test/'))).message).toBe(
      'host "api.partner.test" resolves to 10.0.0.1 (private): refused by the egress policy; allow it with EGRESS_ALLOW_HOSTS or EGRESS_ALLOW_PRIVATE',
    );
  });

  it('an allowed name resolving to cloud metadata embedded in IPv6 is still refused', async () => {
    const guard = createEgressGuard({ allowPrivate: false, allowHosts: ['meta.partner.test'], lookup: lookupOf('::ffff:169.254.169.254') });
    const err = await rejection(guard.checkUrl('http://meta.partner.test/'));
    expect(err).toBeInstanceOf(BlockedDestinationError);
    expect((err as BlockedDestinationError).address).toBe('::ffff:169.254.169.254');
  });

  it('a name with no address at all is ENOTFOUND, as from DNS', async () => {
    const guard = createEgressGuard({ allowPrivate: false, lookup: lookupOf() });
    const err = await rejection(guard.checkUrl('https://nothing.partner.test/'));
    expect(err).not.toBeInstanceOf(BlockedDestinationError);
    expect(err.message).toBe('getaddrinfo ENOTFOUND nothing.partner.test');
    expect(err).toMatchObject({ code: 'ENOTFOUND', hostname: 'nothing.partner.test' });
  });

  it('without an injected lookup, the system resolver answers (localhost, from the hosts file)', async () => {
    const err = await rejection(createEgressGuard({ allowPrivate: false }).checkUrl('http://localhost:1/'));
    expect(err).toBeInstanceOf(BlockedDestinationError);
    expect((err as BlockedDestinationError).host).toBe('localhost');
    expect(['127.0.0.1', '::1']).toContain((err as BlockedDestinationError).address);
    await expect(createEgressGuard({ allowPrivate: true }).checkUrl('http://localhost:1/')).resolves.toBeUndefined();
  });
});

describe('actionDestinations', () => {
  const base = { id: 'a', name: 'a', endpoint: { url: 'https://api.partner.test', method: 'POST' } };

  it('is the endpoint alone for auth without a token endpoint', () => {
    expect(actionDestinations(parseActionDefinition({ ...base, auth: { type: 'bearer', token: { env: 'ACTION_SECRET_T' } } }))).toEqual([
      { path: 'endpoint.url', url: 'https://api.partner.test' },
    ]);
    expect(actionDestinations(parseActionDefinition(base))).toEqual([{ path: 'endpoint.url', url: 'https://api.partner.test' }]);
  });
});

describe('connections the guard allows', () => {
  let server: Server;
  let port = 0;
  beforeAll(async () => {
    server = createServer((socket) => socket.end());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    port = (server.address() as { port: number }).port;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  /** Connects as undici would; resolves with the error, or with the remote address of the socket. */
  function connect(connector: buildConnector.connector, hostname: string): Promise<Error | string> {
    return new Promise((resolve) => {
      connector(
        { hostname, host: `${hostname}:${port}`, protocol: 'http:', port: String(port), localAddress: '127.0.0.1' },
        (err, socket) => {
          const remote = socket?.remoteAddress;
          socket?.destroy();
          resolve(err ?? remote ?? 'no address');
        },
      );
    });
  }

  it('an allowed IP literal connects', async () => {
    expect(await connect(createEgressGuard({ allowPrivate: true }).connector(), '127.0.0.1')).toBe('127.0.0.1');
    expect(await connect(createEgressGuard({ allowPrivate: false, allowHosts: ['127.0.0.1'] }).connector(), '127.0.0.1')).toBe('127.0.0.1');
  });

  it('a name connects to the address the checked lookup gave', async () => {
    const guard = createEgressGuard({ allowPrivate: true, lookup: lookupOf('127.0.0.1') });
    expect(await connect(guard.connector(), 'svc.partner.test')).toBe('127.0.0.1');
  });

  it('without a local address, as deliveries connect (net asks the lookup for every answer), a name still connects', async () => {
    const guard = createEgressGuard({ allowPrivate: true, lookup: lookupOf('127.0.0.1') });
    const remote = await new Promise<Error | string>((resolve) => {
      guard.connector()(
        { hostname: 'svc.partner.test', host: `svc.partner.test:${port}`, protocol: 'http:', port: String(port) },
        (err, socket) => {
          const address = socket?.remoteAddress;
          socket?.destroy();
          resolve(err ?? address ?? 'no address');
        },
      );
    });
    expect(remote).toBe('127.0.0.1');
  });

  it('a name whose answers are all refused never connects', async () => {
    const guard = createEgressGuard({ allowPrivate: false, lookup: lookupOf('127.0.0.1') });
    expect(await connect(guard.connector(), 'svc.partner.test')).toBeInstanceOf(BlockedDestinationError);
  });
});
