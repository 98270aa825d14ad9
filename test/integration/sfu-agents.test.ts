/**
 * LiveKit agent dispatch on our SFU with the real @livekit/agents worker (examples/tone-agent,
 * a child process on its own @livekit/rtc-node 0.13) and real @livekit/rtc-node 1.x
 * participants: automatic dispatch, explicit dispatch through livekit-server-sdk's
 * AgentDispatchClient, dispatch from a token's roomConfig.agents, and what happens to a job
 * when its worker dies.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { JobStatus } from '@livekit/protocol';
import { AccessToken, AgentDispatchClient, RoomAgentDispatch, RoomConfiguration } from 'livekit-server-sdk';
import { ParticipantKind, type RemoteParticipant, type RemoteTrack } from '@livekit/rtc-node';
import { connectRtcNode, goertzelPower, rtcNodeScene, type RtcNodeClient } from '../support/rtc-node.ts';
import { TEST_API_KEY, TEST_API_SECRET, type TestSfu } from '../support/sfu-harness.ts';
import { startAgentWorker, type AgentWorkerProcess } from '../support/agent-worker.ts';
import { waitFor } from '../support/wait.ts';

const GREETING_HZ = 660;
const VOICE_HZ = 440;

const scene = rtcNodeScene();
const workers: AgentWorkerProcess[] = [];
afterEach(async () => {
  for (const w of workers.splice(0)) await w.stop();
  await scene.end();
});

async function worker(sfu: TestSfu, agentName?: string): Promise<AgentWorkerProcess> {
  const before = sfu.sfu.agents.workers().length;
  const w = startAgentWorker({ wsUrl: sfu.wsUrl, ...(agentName ? { agentName } : {}) });
  workers.push(w);
  await waitFor(`the agent worker (${agentName ?? 'automatic'}) to register`, () => sfu.sfu.agents.workers().length > before, {
    timeoutMs: 30_000,
  }).catch((err: Error) => {
    throw new Error(`${err.message}\n--- worker output ---\n${w.output()}`);
  });
  return w;
}

function isAgent(p: RemoteParticipant): boolean {
  return p.kind === ParticipantKind.AGENT && p.identity.startsWith('agent-AJ_');
}

async function agentIn(client: RtcNodeClient): Promise<RemoteParticipant> {
  const present = [...client.room.remoteParticipants.values()].find(isAgent);
  if (present) return present;
  const [p] = await client.waitForEvent('participantConnected', (x) => isAgent(x), 30_000);
  return p;
}

async function agentTrack(client: RtcNodeClient, agent: RemoteParticipant): Promise<RemoteTrack> {
  const present = [...agent.trackPublications.values()].find((pub) => pub.track)?.track;
  if (present) return present as RemoteTrack;
  const [track] = await client.waitForEvent('trackSubscribed', (_t, _pub, p) => p.identity === agent.identity, 30_000);
  return track;
}

/** Whether `hz` clearly dominates 100 ms windows of what the agent plays, within `timeoutMs`. */
async function hears(client: RtcNodeClient, track: RemoteTrack, hz: number, other: number, timeoutMs = 20_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const samples = await client.collectAudio(track, 4800, timeoutMs);
    if (goertzelPower(samples, hz) > 10 * Math.max(1, goertzelPower(samples, other))) return true;
  }
  return false;
}

describe('agent dispatch with the real @livekit/agents worker', () => {
  it('dispatches a worker registered without a name to every new room: the agent greets with its tone and echoes the participant', async () => {
    const sfu = await scene.start();
    await worker(sfu);
    const alice = await scene.connect('alice');
    const agent = await agentIn(alice);
    expect(agent.attributes['lk.agent_name']).toBe('');
    const track = await agentTrack(alice, agent);
    expect(await hears(alice, track, GREETING_HZ, VOICE_HZ)).toBe(true);
    // The agent plays back what it hears: alice's own tone comes back on the agent's track.
    await alice.publishTone(VOICE_HZ);
    expect(await hears(alice, track, VOICE_HZ, GREETING_HZ)).toBe(true);
  });

  it('puts a named agent in a room through AgentDispatchClient and takes it out when the dispatch is deleted', async () => {
    const sfu = await scene.start();
    await worker(sfu, 'tone');
    const alice = await scene.connect('alice');
    const client = new AgentDispatchClient(sfu.url, TEST_API_KEY, TEST_API_SECRET);
    // A named worker does not take the room's automatic dispatch.
    expect(sfu.sfu.agents.workers()[0]!.jobs).toBe(0);
    const dispatch = await client.createDispatch('test-room', 'tone', { metadata: '{"why":"test"}' });
    expect(dispatch.id).toMatch(/^AD_/);
    const agent = await agentIn(alice);
    expect(agent.attributes['lk.agent_name']).toBe('tone');
    expect(await hears(alice, await agentTrack(alice, agent), GREETING_HZ, VOICE_HZ)).toBe(true);

    const listed = await client.getDispatch(dispatch.id, 'test-room');
    expect(listed?.agentName).toBe('tone');
    expect(listed?.metadata).toBe('{"why":"test"}');
    expect(listed?.state?.jobs.map((j) => [j.state?.status, j.state?.participantIdentity])).toEqual([
      [JobStatus.JS_RUNNING, agent.identity],
    ]);

    const gone = alice.waitForEvent('participantDisconnected', (p) => p.identity === agent.identity, 20_000);
    await client.deleteDispatch(dispatch.id, 'test-room');
    await gone;
    expect(await client.listDispatch('test-room')).toHaveLength(1); // the room's automatic one
    await waitFor('the job to end on the worker', () => sfu.sfu.agents.workers()[0]!.jobs === 0);
  });

  it("dispatches the agents named in the creating participant's token (roomConfig.agents)", async () => {
    const sfu = await scene.start();
    await worker(sfu, 'tone');
    const at = new AccessToken(TEST_API_KEY, TEST_API_SECRET, { identity: 'alice', ttl: '10m' });
    at.addGrant({ roomJoin: true, room: 'token-room' });
    at.roomConfig = new RoomConfiguration({ agents: [new RoomAgentDispatch({ agentName: 'tone', metadata: 'from-token' })] });
    const alice = await connectRtcNode(sfu.wsUrl, await at.toJwt());
    scene.onEnd(() => alice.disconnect());
    const agent = await agentIn(alice);
    expect(agent.attributes['lk.agent_name']).toBe('tone');
    const dispatches = await new AgentDispatchClient(sfu.url, TEST_API_KEY, TEST_API_SECRET).listDispatch('token-room');
    expect(dispatches.map((d) => [d.agentName, d.metadata])).toEqual([['tone', 'from-token']]);
  });

  it("moves a dead worker's job to another worker of the same name: the agent comes back as the same participant", async () => {
    const sfu = await scene.start();
    const first = await worker(sfu, 'tone');
    const firstId = sfu.sfu.agents.workers()[0]!.id;
    const second = await worker(sfu, 'tone');
    const alice = await scene.connect('alice');
    const client = new AgentDispatchClient(sfu.url, TEST_API_KEY, TEST_API_SECRET);
    const dispatch = await client.createDispatch('test-room', 'tone');
    const agent = await agentIn(alice);
    const holder = (await client.getDispatch(dispatch.id, 'test-room'))?.state?.jobs[0]?.state?.workerId;
    const dying = holder === firstId ? first : second;
    const survivorId = sfu.sfu.agents.workers().find((w) => w.id !== holder)!.id;
    const left = alice.waitForEvent('participantDisconnected', (p) => p.identity === agent.identity, 30_000);
    await dying.kill();
    await left;
    const [back] = await alice.waitForEvent('participantConnected', (p) => p.identity === agent.identity, 30_000);
    expect(await hears(alice, await agentTrack(alice, back), GREETING_HZ, VOICE_HZ)).toBe(true);
    const [job] = (await client.getDispatch(dispatch.id, 'test-room'))?.state?.jobs ?? [];
    expect([job?.state?.status, job?.state?.workerId]).toEqual([JobStatus.JS_RUNNING, survivorId]);
  });

  it('ends the jobs of a worker that dies: its agent leaves and the job is marked failed', async () => {
    const sfu = await scene.start();
    const w = await worker(sfu, 'tone');
    const alice = await scene.connect('alice');
    const client = new AgentDispatchClient(sfu.url, TEST_API_KEY, TEST_API_SECRET);
    const dispatch = await client.createDispatch('test-room', 'tone');
    const agent = await agentIn(alice);
    const gone = alice.waitForEvent('participantDisconnected', (p) => p.identity === agent.identity, 30_000);
    await w.kill();
    await gone;
    await waitFor('the worker to be deregistered', () => sfu.sfu.agents.workers().length === 0);
    const [job] = (await client.getDispatch(dispatch.id, 'test-room'))?.state?.jobs ?? [];
    expect(job?.state?.status).toBe(JobStatus.JS_FAILED);
    expect(job?.state?.endedAt).toBeGreaterThan(0n);
  });
});
