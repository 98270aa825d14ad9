/**
 * Serialises work per Matrix room: events of one room (and reconcile passes over it) run one at
 * a time, in the order they were queued; different rooms proceed in parallel. A task that throws
 * rejects only its own promise; the queue carries on.
 */
export interface RoomQueue {
  run<T>(roomId: string, task: () => Promise<T>): Promise<T>;
  /** Resolves once every task queued so far has settled. */
  idle(): Promise<void>;
}

export function createRoomQueue(): RoomQueue {
  const tails = new Map<string, Promise<unknown>>();
  return {
    run(roomId, task) {
      const prev = tails.get(roomId) ?? Promise.resolve();
      const next = prev.then(task, task);
      const tail = next.then(
        () => undefined,
        () => undefined,
      );
      tails.set(roomId, tail);
      void tail.then(() => {
        if (tails.get(roomId) === tail) tails.delete(roomId);
      });
      return next;
    },
    async idle() {
      await Promise.all(tails.values());
    },
  };
}
