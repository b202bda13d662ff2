import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createDeadlines as create, type Deadline } from '../../src/delivery/deadlines.js';

// Fake timers move Date.now and the timers together: the deadlines' clock is Date.now here.
const createDeadlines = () => create(() => Date.now());
const sleep = (ms: number) => vi.advanceTimersByTimeAsync(ms);
beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

/** A deadline that records when (on the test's clock) undici's listener was called. */
function watched(deadline: Deadline, fired: string[], name: string): Deadline {
  deadline.addEventListener('abort', () => fired.push(name));
  return deadline;
}

describe('deadlines', () => {
  it('expires each running request at its own time, in order, and never one that has ended', async () => {
    const d = createDeadlines();
    const fired: string[] = [];
    const a = watched(d.start(40), fired, 'a');
    const b = watched(d.start(40), fired, 'b');
    const c = watched(d.start(120), fired, 'c');
    const e = watched(d.start(40), fired, 'e');
    d.end(b, 40);
    expect(d.pending()).toBe(3);
    await sleep(80);
    expect(fired).toEqual(['a', 'e']);
    expect([a.aborted, b.aborted, c.aborted, e.aborted]).toEqual([true, false, false, true]);
    await sleep(100);
    expect(fired).toEqual(['a', 'e', 'c']);
    expect(d.pending()).toBe(0);
  });

  it('does not expire a request before its time, even behind an ended one', async () => {
    const d = createDeadlines();
    const fired: string[] = [];
    const first = watched(d.start(60), fired, 'first');
    await sleep(30);
    const second = watched(d.start(60), fired, 'second');
    d.end(first, 60);
    await sleep(45);
    // first's time has passed, but it ended; second has ~15 ms to go.
    expect(fired).toEqual([]);
    expect(second.aborted).toBe(false);
    await sleep(60);
    expect(fired).toEqual(['second']);
  });

  it('a removed listener is not called, and a request ended after its deadline stays aborted', async () => {
    const d = createDeadlines();
    let called = 0;
    const listener = () => called++;
    const quiet = d.start(20);
    quiet.addEventListener('abort', listener);
    quiet.removeEventListener('abort', listener);
    const late = d.start(20);
    await sleep(50);
    d.end(late, 20);
    expect(called).toBe(0);
    expect(quiet.aborted).toBe(true);
    expect(late.aborted).toBe(true);
  });

  it('counts the requests still running whatever order they end in', () => {
    const d = createDeadlines();
    for (let i = 0; i < 5000; i++) d.end(d.start(10_000), 10_000);
    expect(d.pending()).toBe(0);
    const held = d.start(10_000);
    const rest = Array.from({ length: 3000 }, () => d.start(10_000));
    // Ended behind a request still running: they stay in the line until it ends.
    for (const x of rest.slice(0, 2000)) d.end(x, 10_000);
    expect(d.pending()).toBe(1001);
    d.end(held, 10_000);
    expect(d.pending()).toBe(1000);
    for (const x of rest.slice(2000).reverse()) d.end(x, 10_000);
    expect(d.pending()).toBe(0);
    const next = d.start(10_000);
    expect(d.pending()).toBe(1);
    d.end(next, 10_000);
  });
});
