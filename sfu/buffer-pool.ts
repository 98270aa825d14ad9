/**
 * The size of Node's shared slab for small Buffers (`Buffer.poolSize`), set once by the process
 * entry points that run the SFU. Node 24 cuts every small `Buffer.allocUnsafe` / `Buffer.from`
 * / `Buffer.concat` result out of a 64 KiB slab, and a slab lives as long as any slice of it.
 * The SFU allocates per packet (short-lived slices) and per participant (SRTP keys and salts,
 * DTLS handshake fragments and certificates, header-extension payloads: long-lived slices), so
 * each participant's few hundred bytes of long-lived slices pinned whole slabs: in a heap
 * snapshot about two 64 KiB slabs per participant (bench/sfu-memory.ts), the largest external
 * item. With 8 KiB slabs (Node's size before 24) a pinned slice holds 8 KiB; allocation per
 * packet is unchanged (a new slab every 8 KiB instead of every 64 KiB).
 */

/** Node's pool size before 24, and what the SFU runs with. */
export const SFU_BUFFER_POOL_BYTES = 8 * 1024;

/**
 * Sets `Buffer.poolSize` and retires the current slab (Node only reads the size when it makes
 * the next one), so what is allocated from now on comes from slabs of the new size.
 * Process-wide: called by main.ts of a process that runs the SFU, before it starts.
 */
export function useSmallBufferPool(bytes = SFU_BUFFER_POOL_BYTES): void {
  Buffer.poolSize = bytes;
  // Slices below half the pool size come from the slab; take them until a new slab is made.
  const probe = Math.max(1, (bytes >>> 1) - 1);
  for (let i = 0; i < 1024; i++) {
    if (Buffer.allocUnsafe(probe).buffer.byteLength === bytes) return;
  }
}
