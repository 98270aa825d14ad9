/**
 * The agent worker protocol edges of our SFU with bare workers on @livekit/protocol's
 * WorkerMessage / ServerMessage (test/support/raw-agent-worker.ts): authentication of the
 * `/agent` socket, bad and out-of-turn worker messages (LiveKit closes the connection and
 * nothing changes), the job token minted for an assignment, load sharing between workers of
 * one agent name, re-dispatch of a dead worker's jobs, and AgentDispatchService's auth and
 * errors in both Twirp encodings.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import {
  AgentDispatch,
  CreateAgentDispatchRequest,
  CreateRoomRequest,
  JobStatus,
  type JobType,
  ListAgentDispatchRequest,
  ListAgentDispatchResponse,
  WorkerMessage,
  WorkerStatus,
} from '@livekit/protocol';
import { AccessToken, AgentDispatchClient } from 'livekit-server-sdk';
import { startTestSfu, TEST_API_KEY, TEST_API_SECRET, type TestSfu } from '../support/sfu-harness.ts';
import { agentToken, connectRawWorker, refusedUpgrade, type RawWorker } from '../support/raw-agent-worker.ts';
import { waitFor } from '../support/wait.ts';
import { connectRtcNode } from '../support/rtc-node.ts';

let sfu: TestSfu | undefined;
const raw: RawWorker[] = [];
afterEach(async () => {
  for (const w of raw.splice(0)) await w.close();
  await sfu?.stop();
  sfu = undefined;
});

async function start(room: Record<string, unknown> = {}, limit?: Record<string, unknown>): Promise<TestSfu> {
  sfu = await startTestSfu({ room, ...(limit ? { limit } : {}) });
  return sfu;
}

async function rawWorker(s: TestSfu, agentName?: string): Promise<RawWorker> {
  const w = await connectRawWorker(s.wsUrl);
  raw.push(w);
  if (agentName !== undefined) await w.register(agentName);
  return w;
}

const dispatcher = (s: TestSfu) => new AgentDispatchClient(s.url, TEST_API_KEY, TEST_API_SECRET);

async function adminToken(room: string, grant: Record<string, unknown> = { roomAdmin: true, room }): Promise<string> {
  const at = new AccessToken(TEST_API_KEY, TEST_API_SECRET);
  at.addGrant(grant);
  return at.toJwt();
}

describe('the /agent socket', () => {
  it("refuses a worker without a token, without the agent grant or with a bad signature, with LiveKit's 401 text", async () => {
    const s = await start();
    expect(await refusedUpgrade(s.wsUrl, {})).toEqual({ status: 401, body: 'permissions denied' });
    const noGrant = await agentToken({ roomList: true });
    expect(await refusedUpgrade(s.wsUrl, { authorization: `Bearer ${noGrant}` })).toEqual({ status: 401, body: 'permissions denied' });
    const forged = await agentToken({ agent: true }, 'another-secret-0123456789abcdef-012345');
    const refused = await refusedUpgrade(s.wsUrl, { authorization: `Bearer ${forged}` });
    expect(refused.status).toBe(401);
    expect(refused.body).toMatch(/^invalid authorization token: signature is invalid/);
    expect(s.sfu.agents.workers()).toEqual([]);
  });

  it('answers a registration with a worker id and server info, and pings with pongs', async () => {
    const s = await start();
    const w = await rawWorker(s);
    const id = await w.register('named', 0);
    expect(id).toMatch(/^AW_/);
    const reg = w.received.find((m) => m.message.case === 'register')!;
    expect(reg.message.case === 'register' && reg.message.value.serverInfo?.agentProtocol).toBe(1);
    expect(s.sfu.agents.workers()).toEqual([{ id, agentName: 'named', jobs: 0 }]);
    w.send(new WorkerMessage({ message: { case: 'ping', value: { timestamp: 1234n } } }));
    const pong = await w.next((m) => m.message.case === 'pong', 'a pong');
    expect(pong.message.case === 'pong' && pong.message.value.lastTimestamp).toBe(1234n);
  });

  it('answers JSON text frames in JSON, as LiveKit does', async () => {
    const s = await start();
    const w = await rawWorker(s);
    const texts: string[] = [];
    w.ws.on('message', (data, isBinary) => {
      if (!isBinary) texts.push(String(data));
    });
    w.send(JSON.stringify({ register: { type: 'JT_ROOM', agentName: 'json', version: '1' } }));
    await waitFor('a JSON register response', () => texts.find((t) => t.includes('workerId')));
    expect(s.sfu.agents.workers().map((x) => x.agentName)).toEqual(['json']);
  });

  it.each([
    ['bytes that are not a WorkerMessage', () => new Uint8Array([0xff, 0xff, 0xff, 0x0f])],
    ['a message with no signal in it', () => new WorkerMessage().toBinary()],
    ['a job update before registering', () => new WorkerMessage({ message: { case: 'updateJob', value: { jobId: 'AJ_x' } } }).toBinary()],
    ['a registration with an unknown job type', () => new WorkerMessage({ message: { case: 'register', value: { type: 9 as JobType } } }).toBinary()],
  ])('closes a connection that sends %s, registering nothing', async (_what, frame) => {
    const s = await start();
    const w = await rawWorker(s);
    w.send(frame());
    await w.closed;
    expect(s.sfu.agents.workers()).toEqual([]);
  });

  it('closes a connection whose frame is over limit.agent_signal_message_size_limit (1009)', async () => {
    const s = await start({}, { agent_signal_message_size_limit: 1024 });
    const w = await rawWorker(s);
    w.send(new WorkerMessage({ message: { case: 'register', value: { agentName: 'x'.repeat(2000) } } }));
    expect(await w.closed).toBe(1009);
    expect(s.sfu.agents.workers()).toEqual([]);
  });

  it("closes a registered worker that registers again; ignores answers and updates for jobs that are not its own", async () => {
    const s = await start();
    const a = await rawWorker(s, 'tone');
    const b = await rawWorker(s, 'other');
    const dispatch = await dispatcher(s).createDispatch('test-room', 'tone');
    const job = (await a.next((m) => m.message.case === 'assignment', 'the assignment')).message.value as { job: { id: string } };
    const jobId = job.job.id;
    // b speaks about a's job: nothing changes, b stays connected.
    b.updateJob(jobId, JobStatus.JS_FAILED, 'not mine');
    b.send(new WorkerMessage({ message: { case: 'availability', value: { jobId, available: false } } }));
    b.send(new WorkerMessage({ message: { case: 'ping', value: { timestamp: 7n } } }));
    await b.next((m) => m.message.case === 'pong', 'a pong after the foreign updates');
    const [state] = ((await dispatcher(s).getDispatch(dispatch.id, 'test-room'))?.state?.jobs ?? []).map((j) => j.state);
    expect(state?.status).toBe(JobStatus.JS_RUNNING);
    expect(b.isOpen()).toBe(true);
    // A second registration on a registered connection is LiveKit's unimplemented signal.
    b.send(new WorkerMessage({ message: { case: 'register', value: { agentName: 'again' } } }));
    await b.closed;
    expect(s.sfu.agents.workers().map((x) => x.agentName)).toEqual(['tone']);
  });

  it("mints the job's token for the identity the worker chose, as an agent of the room, and counts the job", async () => {
    const s = await start();
    const w = await rawWorker(s, 'tone');
    await dispatcher(s).createDispatch('test-room', 'tone');
    const m = await w.next((x) => x.message.case === 'assignment', 'the assignment');
    if (m.message.case !== 'assignment') throw new Error('unreachable');
    const { job, token } = m.message.value;
    expect(job?.id).toMatch(/^AJ_/);
    expect(job?.room?.name).toBe('test-room');
    const claims = decodeJwt(token);
    expect(claims).toMatchObject({
      iss: TEST_API_KEY,
      sub: `agent-${job?.id}`,
      kind: 'agent',
      attributes: { 'lk.agent_name': 'tone' },
      video: { roomJoin: true, room: 'test-room', agent: true, canPublish: true, canSubscribe: true },
    });
    expect(claims.exp! - claims.nbf!).toBe(3600);
    // The worker reports the job done: it ends in the dispatch's state.
    w.updateJob(job!.id, JobStatus.JS_SUCCESS);
    await waitFor('the job to end', () => s.sfu.agents.workers()[0]?.jobs === 0);
    const text = await s.sfu.metrics.metrics();
    expect(text).toContain('matrixrtc_sfu_agent_workers 1');
    expect(text).toContain('matrixrtc_sfu_agent_jobs_total{outcome="assigned"} 1');
    expect(text).toContain('matrixrtc_sfu_agent_jobs_total{outcome="succeeded"} 1');
  });
});

describe('sharing and re-dispatching jobs', () => {
  it('shares the jobs of one agent name among its available workers and skips a full one', async () => {
    const s = await start();
    const a = await rawWorker(s, 'share');
    const b = await rawWorker(s, 'share');
    b.updateWorker(WorkerStatus.WS_FULL, 0); // full by status alone
    // The update is applied in order with the ping that follows it.
    b.send(new WorkerMessage({ message: { case: 'ping', value: { timestamp: 1n } } }));
    await b.next((m) => m.message.case === 'pong', 'pong');
    for (let i = 0; i < 4; i++) await dispatcher(s).createDispatch('test-room', 'share');
    await waitFor('four assignments to a', () => a.assignments().length === 4);
    expect(b.availability()).toHaveLength(0);

    b.updateWorker(WorkerStatus.WS_AVAILABLE, 0);
    b.send(new WorkerMessage({ message: { case: 'ping', value: { timestamp: 2n } } }));
    await waitFor('the second pong', () => b.received.filter((m) => m.message.case === 'pong').length === 2);
    for (let i = 0; i < 24; i++) await dispatcher(s).createDispatch('test-room', 'share');
    await waitFor('28 assignments', () => a.assignments().length + b.assignments().length === 28);
    expect(b.assignments().length).toBeGreaterThan(0);
    expect(a.assignments().length).toBeGreaterThan(4);
  });

  it('offers a job the chosen worker declines to the next one', async () => {
    const s = await start();
    const a = await rawWorker(s, 'pick');
    const b = await rawWorker(s, 'pick');
    a.accept = false;
    b.accept = false;
    const dispatch = await dispatcher(s).createDispatch('test-room', 'pick');
    await waitFor('both workers asked', () => a.availability().length === 1 && b.availability().length === 1);
    expect(a.assignments().length + b.assignments().length).toBe(0);
    expect((await dispatcher(s).getDispatch(dispatch.id, 'test-room'))?.state?.jobs).toEqual([]);
  });

  it("re-offers a dead worker's running job to another worker of the same name, resuming the same job", async () => {
    const s = await start();
    const a = await rawWorker(s, 'move');
    const dispatch = await dispatcher(s).createDispatch('test-room', 'move');
    const first = await a.next((m) => m.message.case === 'assignment', 'the first assignment');
    const jobId = first.message.case === 'assignment' ? first.message.value.job!.id : '';
    const b = await rawWorker(s, 'move');
    await a.close();
    const again = await b.next((m) => m.message.case === 'availability', 'the re-offer');
    expect(again.message.case === 'availability' && [again.message.value.job?.id, again.message.value.resuming]).toEqual([jobId, true]);
    await b.next((m) => m.message.case === 'assignment', 'the second assignment');
    const [job] = (await dispatcher(s).getDispatch(dispatch.id, 'test-room'))?.state?.jobs ?? [];
    expect([job?.id, job?.state?.status, job?.state?.workerId]).toEqual([jobId, JobStatus.JS_RUNNING, s.sfu.agents.workers()[0]!.id]);
  });
});

const call = async (s: TestSfu, method: string, body: Uint8Array | string, token: string | undefined, type: string) =>
  fetch(`${s.url}/twirp/livekit.AgentDispatchService/${method}`, {
    method: 'POST',
    headers: { 'content-type': type, ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: typeof body === 'string' ? body : Buffer.from(body),
  });

describe('a resumed job rejoining', () => {
  it("keeps the job running when the resumed agent's session replaces the old one of the same identity", async () => {
    const s = await start();
    const a = await rawWorker(s, 'move');
    const dispatch = await dispatcher(s).createDispatch('test-room', 'move');
    const first = await a.next((m) => m.message.case === 'assignment', 'the first assignment');
    if (first.message.case !== 'assignment') throw new Error('unreachable');
    // The job process of worker a joins with its job token (here an rtc-node client).
    const oldSession = await connectRtcNode(s.wsUrl, first.message.value.token);
    const b = await rawWorker(s, 'move');
    await a.close(); // the worker's connection drops; its job process is still in the room
    const second = await b.next((m) => m.message.case === 'assignment', 'the re-assignment');
    if (second.message.case !== 'assignment') throw new Error('unreachable');
    const replaced = oldSession.waitForEvent('disconnected', undefined, 15_000);
    const newSession = await connectRtcNode(s.wsUrl, second.message.value.token);
    try {
      await replaced;
      expect(newSession.room.localParticipant?.identity).toBe(`agent-${first.message.value.job!.id}`);
      const [job] = (await dispatcher(s).getDispatch(dispatch.id, 'test-room'))?.state?.jobs ?? [];
      expect(job?.state?.status).toBe(JobStatus.JS_RUNNING);
      expect(b.received.filter((m) => m.message.case === 'termination')).toEqual([]);
    } finally {
      await newSession.disconnect();
      await oldSession.disconnect();
    }
  });
});

describe('an agent leaving', () => {
  it("ends the job as failed, 'agent worker left the room', and tells its worker", async () => {
    const s = await start();
    const w = await rawWorker(s, 'tone');
    const dispatch = await dispatcher(s).createDispatch('test-room', 'tone');
    const m = await w.next((x) => x.message.case === 'assignment', 'the assignment');
    if (m.message.case !== 'assignment') throw new Error('unreachable');
    const session = await connectRtcNode(s.wsUrl, m.message.value.token);
    await session.disconnect();
    const term = await w.next((x) => x.message.case === 'termination', 'the termination');
    expect(term.message.case === 'termination' && term.message.value.jobId).toBe(m.message.value.job!.id);
    const [job] = (await dispatcher(s).getDispatch(dispatch.id, 'test-room'))?.state?.jobs ?? [];
    expect([job?.state?.status, job?.state?.error]).toEqual([JobStatus.JS_FAILED, 'agent worker left the room']);
  });
});

describe('AgentDispatchService', () => {

  it('needs roomAdmin for the same room, answering Twirp unauthenticated otherwise', async () => {
    const s = await start();
    const body = JSON.stringify({ room: 'test-room', agent_name: 'x' });
    for (const token of [undefined, await adminToken('other-room'), await adminToken('test-room', { roomCreate: true })]) {
      const res = await call(s, 'CreateDispatch', body, token, 'application/json');
      expect(res.status).toBe(401);
      expect(await res.json()).toMatchObject({ code: 'unauthenticated', msg: 'permissions denied' });
    }
    expect(s.sfu.rooms.getRoom('test-room')).toBeUndefined();
  });

  it('speaks protobuf too, and answers not_found for unknown rooms and dispatches', async () => {
    const s = await start({ auto_create: false });
    const token = await adminToken('r1');
    const missing = await call(s, 'ListDispatch', new ListAgentDispatchRequest({ room: 'r1' }).toBinary(), token, 'application/protobuf');
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ code: 'not_found', msg: 'requested room does not exist' });
    const create = await call(s, 'CreateDispatch', new CreateAgentDispatchRequest({ room: 'r1', agentName: 'x' }).toBinary(), token, 'application/protobuf');
    expect(create.status).toBe(404);

    await s.sfu.rooms.createRoom(new CreateRoomRequest({ name: 'r1' }));
    const created = await call(s, 'CreateDispatch', new CreateAgentDispatchRequest({ room: 'r1', agentName: 'x', metadata: 'm' }).toBinary(), token, 'application/protobuf');
    expect(created.status).toBe(200);
    const dispatch = AgentDispatch.fromBinary(new Uint8Array(await created.arrayBuffer()));
    expect([dispatch.agentName, dispatch.room, dispatch.metadata]).toEqual(['x', 'r1', 'm']);
    const listed = await call(s, 'ListDispatch', new ListAgentDispatchRequest({ room: 'r1' }).toBinary(), token, 'application/protobuf');
    const names = ListAgentDispatchResponse.fromBinary(new Uint8Array(await listed.arrayBuffer())).agentDispatches.map((d) => d.agentName);
    expect(names.toSorted()).toEqual(['', 'x']); // the room's automatic dispatch and ours

    const unknown = await call(s, 'DeleteDispatch', JSON.stringify({ room: 'r1', dispatch_id: 'AD_nope' }), token, 'application/json');
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ code: 'not_found', msg: 'dispatch ID not found' });
  });
});
