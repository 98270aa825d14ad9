/**
 * Three test projects:
 * - unit: pure logic next to the code (`**\/*.test.ts` in bridge, sfu, common, embedded) and
 *   `test/unit`; fast, parallel.
 * - integration: cross-process tests in `test/integration` with real Redis, real UDP on
 *   loopback, @livekit/rtc-node and livekit-server-sdk clients.
 * - browser: scenarios in `test/browser` driving the real livekit-client in headless Chromium.
 *   They share one Chromium (launched in globalSetup) and run one file at a time.
 * - stress: `test/stress`, the 30 s flood of one SFU and one bridge while a call runs, which
 *   measures frame rates and memory and so runs alone.
 * Groups run one after another (unit and integration together, then browser, then stress), so
 * browser and stress measurements do not share the two cores with other test files.
 */
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    reporters: ['default'],
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['{bridge,sfu,common,embedded}/**/*.test.ts', 'test/unit/**/*.test.ts'],
          testTimeout: 10_000,
        },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          sequence: { groupOrder: 0 },
          pool: 'forks',
          maxWorkers: 2,
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        extends: true,
        test: {
          name: 'browser',
          include: ['test/browser/**/*.test.ts'],
          sequence: { groupOrder: 1 },
          globalSetup: ['test/support/chromium-global-setup.ts'],
          pool: 'forks',
          fileParallelism: false,
          maxWorkers: 1,
          testTimeout: 90_000,
          hookTimeout: 90_000,
        },
      },
      {
        extends: true,
        test: {
          name: 'stress',
          include: ['test/stress/**/*.test.ts'],
          sequence: { groupOrder: 2 },
          pool: 'forks',
          fileParallelism: false,
          maxWorkers: 1,
          testTimeout: 180_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
