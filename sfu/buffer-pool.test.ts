/**
 * The SFU's Buffer pool size (buffer-pool.ts): once set, small Buffers come from slabs of that
 * size at once, so a long-lived slice pins no more than that.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { SFU_BUFFER_POOL_BYTES, useSmallBufferPool } from './buffer-pool.ts';

const original = Buffer.poolSize;
afterEach(() => useSmallBufferPool(original));

describe('useSmallBufferPool', () => {
  it('makes the next small Buffer come from a slab of the SFU pool size, not the current slab', () => {
    useSmallBufferPool(64 * 1024);
    expect(Buffer.allocUnsafe(16).buffer.byteLength).toBe(64 * 1024);
    useSmallBufferPool();
    expect(Buffer.poolSize).toBe(SFU_BUFFER_POOL_BYTES);
    for (const size of [16, 200, 1200]) expect(Buffer.allocUnsafe(size).buffer.byteLength).toBe(SFU_BUFFER_POOL_BYTES);
    expect(Buffer.from('a long-lived salt').buffer.byteLength).toBe(SFU_BUFFER_POOL_BYTES);
  });
});
