/**
 * Preloaded into a child process (`--expose-gc --import=./test/support/periodic-gc.ts`) by tests
 * that judge its memory over time: a full collection every second, so its RSS and heap figures
 * say what is live, not how long ago V8 last ran a major collection (between two, garbage
 * promoted under load grows the old generation and the RSS by a megabyte or two a second, and
 * whether a run happens to cross one decides a 20 % budget). Test-only; never loaded by the
 * product.
 */
const gc = (globalThis as { gc?: () => void }).gc;
if (typeof gc !== 'function') throw new Error('test/support/periodic-gc.ts needs node --expose-gc');
setInterval(() => gc(), 1000).unref();
