import { describe, expect, it } from 'vitest';
import { monitorArgs } from '../support/redis-monitor.js';

describe("the tests' MONITOR line reader", () => {
  it('reads each quoted argument, with the escapes Redis writes', () => {
    expect(monitorArgs('1796293334.703114 [0 127.0.0.1:58022] "info"')).toEqual(['info']);
    expect(
      monitorArgs('1.5 [0 unix:/tmp/r.sock] "evalsha" "ab12" "3" "{t}:results" "{\\"id\\":\\"a b\\"}" "x\\\\y" "l1\\nl2" "\\xff\\x00" ""'),
    ).toEqual(['evalsha', 'ab12', '3', '{t}:results', '{"id":"a b"}', 'x\\y', 'l1\nl2', '\xff\x00', '']);
  });
});
