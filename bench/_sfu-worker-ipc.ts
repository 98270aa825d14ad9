/**
 * The request/reply loop every bench worker process runs with its parent (bench/_sfu-procs.ts):
 * each IPC message `{id, type, ...}` is handled and answered `{id, ...result}` or `{id, error}`;
 * after `close` the worker exits; when the parent goes away or sends SIGTERM the worker closes
 * what it opened and exits instead of lingering.
 */
function reply(msg: Record<string, unknown>): void {
  process.send?.(msg);
}

export function serveParent<R extends { id: number; type: string }>(
  handle: (req: R) => Promise<Record<string, unknown>>,
  closeAll: () => Promise<void>,
): void {
  process.on('message', (raw: R) => {
    handle(raw).then(
      (result) => {
        reply({ id: raw.id, ...result });
        if (raw.type === 'close') setTimeout(() => process.exit(0), 100);
      },
      (err: unknown) => reply({ id: raw.id, error: (err as Error).message ?? String(err) }),
    );
  });
  const leave = () => {
    void closeAll().finally(() => process.exit(0));
  };
  process.on('disconnect', leave);
  process.on('SIGTERM', leave);
}
