/**
 * The Node (V8) flags every process that runs the SFU starts with. V8 reads them before the
 * heap exists, so they cannot be set from inside the process: they are written where the
 * processes start, in package.json's `start` and `sfu` scripts and in the Dockerfile's role
 * dispatcher (`sfu`, `embedded`); test/unit/node-flags.test.ts keeps those equal to this list,
 * and the benchmarks start the SFU with it.
 *
 * - `--max-semi-space-size=8`: V8 grows a process's young generation with its allocation rate,
 *   up to 128 MB on Node 24, and keeps it. Forwarding allocates per packet, so a busy SFU's RSS
 *   rose by about 2 MB per participant of which about 1 MB was that growth (bench/sfu-memory.ts).
 *   Capped at 2 × 8 MB, the saturation sweep's RSS slope fell from 2.06 to 1.28 MB per
 *   participant; the CPU per forwarded packet did not move beyond the noise (A/B against the
 *   same code without the flag: median ratio 0.98 over seven steps, audio and video).
 */
export const SFU_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=8'];
