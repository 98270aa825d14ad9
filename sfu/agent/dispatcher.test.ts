/**
 * The agent dispatcher's timers and room-end handling on the injected clock, over the real room
 * manager (rooms made through its RoomService side, so no media is involved) and worker links
 * that record what the server sends.
 */
import { describe, expect, it } from 'vitest';
import { CreateRoomRequest, JobStatus, ServerMessage, WorkerMessage } from '@livekit/protocol';
import { createManualClock } from '../../common/clock.ts';
import { createSilentLogger } from '../../common/logger.ts';
import { parseSfuConfig } from '../config.ts';
import { createRoomManager } from '../rtc/room-manager.ts';
import type { MediaTransportFactory } from '../rtc/types.ts';
import { createAgentDispatcher, REGISTER_TIMEOUT_MS } from './dispatcher.ts';
import { ASSIGN_JOB_TIMEOUT_MS } from './worker.ts';
import { waitFor } from '../../test/support/wait.ts';

const KEY = 'k';
const SECRET = 'a-secret-that-is-long-enough-0123456789';

async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

/**
 * Lets pending work (token signing, which jose runs on WebCrypto off the event loop) finish until
 * `done` holds, on real time: the manual clock does not move. A count of event-loop turns is not a
 * bound here; a loaded CI machine signs slower than any such count.
 */
async function until(what: string, done: () => boolean): Promise<void> {
  await waitFor(what, done, { timeoutMs: 10_000, intervalMs: 2 });
}

function setup() {
  const clock = createManualClock();
  const logger = createSilentLogger();
  const config = parseSfuConfig({ keys: { [KEY]: SECRET }, room: { auto_create: false } }, 'test');
  const noMedia: MediaTransportFactory = {
    create() {
      throw new Error('no media in this test');
    },
  } as unknown as MediaTransportFactory;
  const rooms = createRoomManager({ config, logger, clock, transportFactory: noMedia });
  const dispatcher = createAgentDispatcher({ rooms, config, clock, logger });
  const connect = () => {
    const sent: ServerMessage[] = [];
    let closed = false;
    const session = dispatcher.openWorker(
      {
        send: (m) => sent.push(m),
        close: () => {
          if (closed) return;
          closed = true;
          session.closed();
        },
      },
      KEY,
    );
    const register = (agentName: string) =>
      session.handle(new WorkerMessage({ message: { case: 'register', value: { agentName, version: 't' } } }));
    const answer = (jobId: string, available: boolean) =>
      session.handle(new WorkerMessage({ message: { case: 'availability', value: { jobId, available, participantIdentity: `agent-${jobId}` } } }));
    const of = <C extends NonNullable<ServerMessage['message']['case']>>(c: C) => sent.filter((m) => m.message.case === c);
    return { sent, session, register, answer, of, isClosed: () => closed };
  };
  return { clock, rooms, dispatcher, connect };
}

describe('agent dispatcher timers', () => {
  it('closes a connection that has not registered within 10 s, and keeps one that has', async () => {
    const { clock, connect, dispatcher } = setup();
    const silent = connect();
    const registered = connect();
    registered.register('tone');
    clock.advance(REGISTER_TIMEOUT_MS - 1);
    expect(silent.isClosed()).toBe(false);
    clock.advance(1);
    expect(silent.isClosed()).toBe(true);
    expect(registered.isClosed()).toBe(false);
    expect(dispatcher.workers().map((w) => w.agentName)).toEqual(['tone']);
  });

  it('gives a job to the next worker when the one asked does not answer within 10 s', async () => {
    const { clock, rooms, connect, dispatcher } = setup();
    const a = connect();
    const b = connect();
    a.register('tone');
    b.register('tone');
    await rooms.createRoom(new CreateRoomRequest({ name: 'r' }));
    await dispatcher.createDispatch({ room: 'r', agentName: 'tone', metadata: '' });
    await flush();
    const [first, second] = [a, b].toSorted((x, y) => y.of('availability').length - x.of('availability').length);
    expect(first!.of('availability')).toHaveLength(1);
    expect(second!.of('availability')).toHaveLength(0);
    clock.advance(ASSIGN_JOB_TIMEOUT_MS);
    await until('the second worker to be asked', () => second!.of('availability').length === 1);
    const asked = second!.of('availability')[0]!;
    if (asked.message.case !== 'availability') throw new Error('unreachable');
    second!.answer(asked.message.value.job!.id, true);
    await until('the assignment to the second worker', () => second!.of('assignment').length === 1);
    // The late answer of the first worker changes nothing.
    first!.answer(asked.message.value.job!.id, true);
    await flush();
    expect(first!.of('assignment')).toHaveLength(0);
  });

  it("ends a room's running jobs when the room finishes: the worker gets a termination", async () => {
    const { rooms, connect, dispatcher } = setup();
    const w = connect();
    w.register('tone');
    await rooms.createRoom(new CreateRoomRequest({ name: 'r' }));
    const d = await dispatcher.createDispatch({ room: 'r', agentName: 'tone', metadata: '' });
    await flush();
    const asked = w.of('availability')[0]!;
    if (asked.message.case !== 'availability') throw new Error('unreachable');
    const jobId = asked.message.value.job!.id;
    w.answer(jobId, true);
    await until('the assignment', () => w.of('assignment').length === 1);
    expect((await dispatcher.listDispatch('r', d.id))[0]?.state?.jobs[0]?.state?.status).toBe(JobStatus.JS_RUNNING);
    await rooms.deleteRoom('r');
    expect(w.of('termination').map((m) => (m.message.case === 'termination' ? m.message.value.jobId : ''))).toEqual([jobId]);
    expect(dispatcher.workers()[0]!.jobs).toBe(0);
    await expect(dispatcher.listDispatch('r', '')).rejects.toThrow('requested room does not exist');
  });
});
