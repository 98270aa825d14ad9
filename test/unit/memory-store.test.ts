/**
 * The in-memory bridge store stays bounded: transaction ids, transaction leases and latest-leave
 * times are swept once their TTL passed on the injected clock (at the next write after the sweep
 * interval), SFU room bindings go when unbound, and pending leaves when taken (once: a second
 * take gets nothing).
 */
import { describe, expect, it } from 'vitest';
import { createManualClock } from '../../common/clock.ts';
import { createMemoryStore, SWEEP_INTERVAL_MS } from '../../bridge/store/memory-store.ts';

describe('in-memory bridge store', () => {
  it('sweeps transaction ids and leases after their TTL instead of keeping every one ever seen', async () => {
    const clock = createManualClock();
    const store = createMemoryStore({ clock });
    for (let i = 0; i < 500; i++) {
      await store.markTxnDone(`txn-${i}`, 1_000);
      await store.lockTxn(`txn-${i}`, 1_000);
    }
    expect(store.sizes()).toMatchObject({ txnDone: 500, txnLocks: 500 });
    clock.advance(SWEEP_INTERVAL_MS);
    await store.markTxnDone('later', 1_000);
    expect(store.sizes()).toMatchObject({ txnDone: 1, txnLocks: 0 });
    expect(await store.isTxnDone('txn-1')).toBe(false);
    expect(await store.isTxnDone('later')).toBe(true);
  });

  it('sweeps latest-leave times after their TTL; a live one is still answered', async () => {
    const clock = createManualClock();
    const store = createMemoryStore({ clock });
    for (let i = 0; i < 100; i++) await store.setLeftAt('!r:hs', `state:k${i}`, clock.now(), 1_000);
    await store.setLeftAt('!r:hs', 'state:long', 42, 10 * SWEEP_INTERVAL_MS);
    clock.advance(SWEEP_INTERVAL_MS);
    expect(await store.getLeftAt('!r:hs', 'state:k1')).toBeUndefined();
    await store.setLeftAt('!r:hs', 'state:new', clock.now(), 1_000);
    expect(store.sizes().leftAt).toBe(2);
    expect(await store.getLeftAt('!r:hs', 'state:long')).toBe(42);
  });

  it('forgets an SFU room binding when unbound, and hands a pending leave to one taker only', async () => {
    const store = createMemoryStore({ clock: createManualClock() });
    await store.bindSfuRoom('sfu-room', { roomId: '!r:hs', slotId: 'm.call#ROOM' });
    await store.unbindSfuRoom('sfu-room');
    expect(await store.lookupSfuRoom('sfu-room')).toBeUndefined();
    expect(store.sizes().sfuRooms).toBe(0);
    await store.setPendingLeave({ roomId: '!r:hs', key: 'state:k', userId: '@a:hs', at: 1, due: 2 });
    expect(await store.takePendingLeave('!r:hs', 'state:k')).toMatchObject({ userId: '@a:hs', due: 2 });
    expect(await store.takePendingLeave('!r:hs', 'state:k')).toBeUndefined();
    expect(store.sizes().pendingLeaves).toBe(0);
  });
});
