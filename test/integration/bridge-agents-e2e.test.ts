/**
 * Agents in Matrix calls, end to end: the fake homeserver pushes transactions to the whole
 * bridge (createBridge with `agents_allowed: tone`), the bridge drives our SFU, and the real
 * @livekit/agents worker of examples/tone-agent is registered as `tone` on that SFU. A room
 * member's `io.github.matrix_rtc_backend.agent` state event puts the agent in the call's SFU
 * room; the call ending, or the request being withdrawn (empty content, redaction), takes it
 * out; requests from members below the power level, or for agents not on the list, do nothing.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { AgentDispatchClient } from 'livekit-server-sdk';
import { AGENT_REQUEST_EVENT } from '../../bridge/agents/request.ts';
import { startAgentWorker, type AgentWorkerProcess } from '../support/agent-worker.ts';
import { TEST_API_KEY, TEST_API_SECRET } from '../support/sfu-harness.ts';
import { waitFor } from '../support/wait.ts';
import { CALL, joinContent, startWorld, stateKeyOf, type World } from './bridge-e2e-world.ts';

let current: World | undefined;
let worker: AgentWorkerProcess | undefined;
afterEach(async () => {
  await worker?.stop();
  worker = undefined;
  await current?.stop();
  current = undefined;
});

async function world(): Promise<World> {
  current = await startWorld({ kind: 'memory', env: { BRIDGE_AGENTS_ALLOWED: 'tone', BRIDGE_AGENTS_INVITE_POWER_LEVEL: '50' } });
  worker = startAgentWorker({ wsUrl: current.sfu.wsUrl, agentName: 'tone' });
  const w = current;
  await waitFor('the tone agent worker to register', () => w.sfu.sfu.agents.workers().length === 1, { timeoutMs: 30_000 });
  return w;
}

const agentIdentities = async (w: World) => (await w.sfuIdentities(w.sfuRoom)).filter((i) => i.startsWith('agent-AJ_'));

/** Alice joins the call and connects with her /sfu/get token. */
async function aliceInCall(w: World) {
  const joinId = w.composed.hs.model.sendState(w.alice, w.roomId, CALL, stateKeyOf(w.alice, 'DEVICEA'), joinContent('DEVICEA', w.alice));
  await w.pushed(joinId);
  const t = await w.sfuGet(w.alice, w.roomId, 'DEVICEA');
  expect(t.status).toBe(200);
  return w.connect(String(t.json.jwt));
}

async function aliceLeaves(w: World) {
  await w.pushed(w.composed.hs.model.sendState(w.alice, w.roomId, CALL, stateKeyOf(w.alice, 'DEVICEA'), {}));
}

describe('agents invited into Matrix calls', () => {
  it("puts the requested agent in the call's SFU room once the call starts, and takes it out when the call ends", async () => {
    const w = await world();
    const hs = w.composed.hs.model;
    // carol (power 100) asks before anyone is in the call: nothing to dispatch into yet.
    await w.pushed(hs.sendState(w.carol, w.roomId, AGENT_REQUEST_EVENT, 'tone', { active: true }));
    expect(await w.sfuRooms()).not.toContain(w.sfuRoom);

    const alice = await aliceInCall(w);
    const [agent] = await alice.waitForEvent('participantConnected', (p) => p.identity.startsWith('agent-AJ_'), 30_000);
    expect(agent.attributes['lk.agent_name']).toBe('tone');
    const [dispatch] = await new AgentDispatchClient(w.sfu.url, TEST_API_KEY, TEST_API_SECRET).listDispatch(w.sfuRoom).then((ds) => ds.filter((d) => d.agentName === 'tone'));
    expect(JSON.parse(dispatch!.metadata)).toMatchObject({ matrix_room_id: w.roomId, requested_by: w.carol });

    await aliceLeaves(w);
    await waitFor('the agent to leave the SFU room', async () => (await agentIdentities(w)).length === 0, { timeoutMs: 15_000 });
    await waitFor('the job to end on the worker', () => w.sfu.sfu.agents.workers()[0]?.jobs === 0);
  });

  it('takes the agent out of a running call when the request is withdrawn, and brings it back when asked again', async () => {
    const w = await world();
    const hs = w.composed.hs.model;
    const alice = await aliceInCall(w);
    const requestId = hs.sendState(w.carol, w.roomId, AGENT_REQUEST_EVENT, 'tone', { active: true });
    await w.pushed(requestId);
    await alice.waitForEvent('participantConnected', (p) => p.identity.startsWith('agent-AJ_'), 30_000);

    await w.pushed(hs.redact(w.carol, w.roomId, requestId));
    await waitFor('the agent to leave after the redaction', async () => (await agentIdentities(w)).length === 0, { timeoutMs: 15_000 });

    await w.pushed(hs.sendState(w.carol, w.roomId, AGENT_REQUEST_EVENT, 'tone', { active: true }));
    await waitFor('the agent back', async () => (await agentIdentities(w)).length === 1, { timeoutMs: 30_000 });
    await w.pushed(hs.sendState(w.carol, w.roomId, AGENT_REQUEST_EVENT, 'tone', {}));
    await waitFor('the agent to leave after the empty request', async () => (await agentIdentities(w)).length === 0, { timeoutMs: 15_000 });
  });

  it('ignores requests from members below the power level and for agents the bridge does not allow', async () => {
    const w = await world();
    const hs = w.composed.hs.model;
    // Let everyone send the request event, so the bridge's own power check is what decides.
    const pl = hs.stateEvent(w.roomId, 'm.room.power_levels', '')!.content;
    await w.pushed(hs.sendState(w.carol, w.roomId, 'm.room.power_levels', '', { ...pl, events: { ...(pl.events as object), [AGENT_REQUEST_EVENT]: 0 } }));
    await aliceInCall(w);
    await w.pushed(hs.sendState(w.alice, w.roomId, AGENT_REQUEST_EVENT, 'tone', { active: true }));
    await w.pushed(hs.sendState(w.carol, w.roomId, AGENT_REQUEST_EVENT, 'not-allowed', { active: true }));
    const named = (await new AgentDispatchClient(w.sfu.url, TEST_API_KEY, TEST_API_SECRET).listDispatch(w.sfuRoom)).filter((d) => d.agentName);
    expect(named).toEqual([]);
    expect(await agentIdentities(w)).toEqual([]);
    // Raising alice to 50 makes her standing request count on the next sync.
    await w.pushed(hs.sendState(w.carol, w.roomId, 'm.room.power_levels', '', {
      ...hs.stateEvent(w.roomId, 'm.room.power_levels', '')!.content,
      users: { [w.carol]: 100, [w.alice]: 50 },
    }));
    await waitFor('the agent once alice may invite it', async () => (await agentIdentities(w)).length === 1, { timeoutMs: 30_000 });
  });
});
