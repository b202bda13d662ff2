import { describe, expect, it } from 'vitest';
import { createDeliveryEvents } from '../../src/delivery/delivery-events.js';

const delivered = { actionId: 'a', jobId: 'j1', status: 200, attempt: 1, latencyMs: 12 };

describe('delivery events', () => {
  it('hands each event to its listeners, in order, until they unsubscribe', () => {
    const events = createDeliveryEvents();
    const seen: string[] = [];
    const off = events.on('delivered', (e) => seen.push(`first ${e.jobId}`));
    events.on('delivered', (e) => seen.push(`second ${e.jobId}`));
    events.on('dead', () => seen.push('dead'));
    expect(events.has('delivered')).toBe(true);
    expect(events.has('retried')).toBe(false);
    events.emit('delivered', delivered);
    off();
    events.emit('delivered', { ...delivered, jobId: 'j2' });
    expect(seen).toEqual(['first j1', 'second j1', 'second j2']);
  });

  it('fences a listener that throws: the emitter returns, the next listener runs, the error is reported', () => {
    const reported: [string, string][] = [];
    const events = createDeliveryEvents((err, name) => reported.push([name, (err as Error).message]));
    const seen: string[] = [];
    events.on('delivered', () => {
      throw new Error('broken metric');
    });
    events.on('delivered', (e) => seen.push(e.jobId));
    expect(() => events.emit('delivered', delivered)).not.toThrow();
    expect(seen).toEqual(['j1']);
    expect(reported).toEqual([['delivered', 'broken metric']]);
  });

  it('survives a reporter that throws too', () => {
    const events = createDeliveryEvents(() => {
      throw new Error('broken logger');
    });
    events.on('circuit', () => {
      throw new Error('broken gauge');
    });
    expect(() => events.emit('circuit', { key: 'k', state: 'open' })).not.toThrow();
  });
});
