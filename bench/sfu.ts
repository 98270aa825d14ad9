/**
 * `npm run bench -- sfu`: the SFU under load, in its own process (`node sfu/main.ts`, generated
 * LIVEKIT_CONFIG on loopback), driven by real clients in other processes so its CPU is measured
 * alone (/proc/<pid>/stat utime+stime, not the machine's total, which other processes share):
 * 1. werift baseline: publisher → subscriber directly, the network part of packet latency;
 * 2. audio fan-out (SFU run with --cpu-prof): join time, then subscribers added in steps until
 *    the SFU saturates a core or the clients become the bottleneck; per step forwarded packets/s,
 *    CPU µs per packet, time a packet spends in the SFU (werift stamps minus the baseline), RSS.
 *    First with rtc-node subscribers (the real client library, heavy per packet), then with
 *    werift subscribers, which cost less and let the sweep reach further on two cores;
 * 3. a video room on a fresh SFU: simulcast publishers, subscribers asking for different sizes;
 * 4. the saturation sweep (bench/_sfu-saturate.ts): cheap subscribers and paced publishers that
 *    drive the SFU to a full core, giving `perCoreAtSaturation`; with `--against <git ref>` only
 *    this sweep runs, on this tree's SFU and that ref's side by side (bench/_sfu-against.ts),
 *    steps alternating between them, each figure printed for both with their ratio;
 * 5. the floor (bench/_sfu-floor.ts): receive, unprotect, protect and send to N with no werift;
 *    the SFU's µs per forwarded packet is reported as a percentage of it.
 * With `--workers 1,2` (bench/_sfu-workers.ts) only the media-worker comparison runs instead: per
 * worker count an SFU with `--workers N`, a big room (placement spread) and many three-party
 * rooms (placement pack) at the same offered load, per-thread CPU and CPU per forwarded packet,
 * medians of alternating rounds, written to bench/results/sfu-workers.json.
 * Writes bench/results/sfu-fanout.svg, sfu-fanout.cpuprofile (cut to the measurement windows
 * when summarised) and, through the runner, bench/results/sfu.json. Figures only: nothing
 * passes or fails on time. Knobs: BENCH_SFU_STEPS / BENCH_SFU_WERIFT_STEPS / BENCH_SFU_SAT_STEPS /
 * BENCH_SFU_SAT_VIDEO_STEPS (subscriber counts, e.g. "2,5,10"), BENCH_SFU_WINDOW_MS, BENCH_SFU_PUBLISHERS,
 * BENCH_SFU_SAT_PUBLISHERS, BENCH_SFU_SAT_SAMPLE (1 in N packets verified), BENCH_SFU_THIS_ARGS
 * (node flags for this tree's SFU in the saturation sweep), BENCH_SFU_LOG_LEVEL.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { ProcessSet, ask, forkWorker, repoRoot, round, sampleProc, startSfuProcess, stopChild, type SfuProcess } from './_sfu-procs.ts';
import { runFanout, type FanoutResult } from './_sfu-fanout.ts';
import { runVideoRoom } from './_sfu-video.ts';
import { fanoutSvg } from './_sfu-svg.ts';
import { formatProfileSummary, summariseCpuProfile, type ProfileSummary } from './_profile-summary.ts';
import { ratios, runSaturation, type SaturationResult, type SaturationTarget } from './_sfu-saturate.ts';
import { againstArg, checkoutAgainst, currentCommit } from './_sfu-against.ts';
import { runFloor, type FloorResult } from './_sfu-floor.ts';
import { runWorkersBench } from './_sfu-workers.ts';

const resultsDir = join(repoRoot, 'bench', 'results');
const PROFILE_NAME = 'sfu-fanout.cpuprofile';
const env = process.env;
const steps = (v: string) => v.split(',').map(Number).filter((n) => n > 0);
const RTC_STEPS = steps(env.BENCH_SFU_STEPS ?? '2,5,10,20,40,60');
const WERIFT_STEPS = steps(env.BENCH_SFU_WERIFT_STEPS ?? '20,40,80,120,160,200,250');
const WINDOW_MS = Number(env.BENCH_SFU_WINDOW_MS ?? 4000);
const PUBLISHERS = Number(env.BENCH_SFU_PUBLISHERS ?? 2);
const SUBSCRIBER_WORKERS = 4;
// Up to where the SFU passes 90 % of a core (the sweep stops there); on a quiet 2-core machine
// that was about 170 subscribers of 10 audio publishers, or 100 subscribers of 10 video ones.
const SAT_STEPS = steps(env.BENCH_SFU_SAT_STEPS ?? '20,40,60,80,100,120,140,160,180,200,240,280');
const SAT_VIDEO_STEPS = steps(env.BENCH_SFU_SAT_VIDEO_STEPS ?? '10,20,30,40,50,60,70,80,90,100,120,140');
const SAT_PUBLISHERS = Number(env.BENCH_SFU_SAT_PUBLISHERS ?? 10);
const SAT_SAMPLE = Number(env.BENCH_SFU_SAT_SAMPLE ?? 16);
const SAT_PROFILE = 'sfu-saturation.cpuprofile';
/**
 * Node flags for this tree's SFU in the saturation sweep only (BENCH_SFU_THIS_ARGS, space
 * separated, after the production ones of sfu/node-flags.ts, so a later one wins): with
 * `--against HEAD` the A/B then measures what a flag costs, e.g. `--max-semi-space-size=64`
 * against the production cap of 8.
 */
const THIS_SFU_ARGS = (env.BENCH_SFU_THIS_ARGS ?? '').split(' ').filter(Boolean);

// Disjoint UDP port ranges per process (werift scans a range from its start and re-binds the
// port it found later, so two processes sharing a range can collide), away from the tests'
// 40000-49999.
const SFU_PORTS: [number, number] = [31000, 33999];
const WERIFT_PORTS: [number, number] = [34000, 34999];
const WERIFT_SUB_PORTS: [number, number][] = [
  [35000, 35999],
  [36000, 36999],
];
/** The --against SFU and the saturation sweep's publishers. */
const AGAINST_SFU_PORTS: [number, number] = [37000, 39999];
const SAT_PUBLISHER_PORTS: [number, number] = [30000, 30999];

const log = (line: string) => console.log(`[sfu bench] ${line}`);
const rtcWorker = (procs: ProcessSet) => forkWorker(procs, '_sfu-rtc-worker.ts', { NODE_ENV: 'production' });

async function closeWorkers(workers: ChildProcess[]): Promise<void> {
  await Promise.all(workers.map((w) => ask(w, { type: 'close' }, 15_000).catch(() => undefined)));
  await Promise.all(workers.map((w) => stopChild(w, 3000)));
}

async function stopSfu(sfu: SfuProcess): Promise<void> {
  // Long grace: with --cpu-prof the profile is written at exit.
  await stopChild(sfu.child, 30_000);
}

interface SaturationReport {
  targets: { label: string; commit: string }[];
  results: SaturationResult[];
  /** this tree ÷ the other, per step (µs per packet below 1 = this tree cheaper). */
  ratioThisOverOther?: ReturnType<typeof ratios>;
  /** The same sweep with single-layer VP8 publishers (three packets a frame, 25 frames a second). */
  video: { results: SaturationResult[]; ratioThisOverOther?: ReturnType<typeof ratios>; profile: ProfileSummary | null };
  floor: FloorResult;
  /** The SFU's µs per forwarded packet at its highest measured step, as a percentage of the floor's. */
  percentOfFloor: Record<string, number | null>;
  profile: ProfileSummary | null;
}

/** The saturation sweep on this tree (profiled) and, when given, another ref; then the floor. */
async function saturation(procs: ProcessSet, against: string | undefined): Promise<SaturationReport> {
  const other = against ? checkoutAgainst(against) : undefined;
  const profilePath = join(resultsDir, SAT_PROFILE);
  if (existsSync(profilePath)) rmSync(profilePath);
  const targets: (SaturationTarget & { commit: string })[] = [];
  try {
    // Both profiled (the same overhead on each side of the ratio); only ours is summarised.
    const otherProfileDir = other ? join(other.root, 'bench', 'results') : undefined;
    if (other && otherProfileDir) {
      mkdirSync(otherProfileDir, { recursive: true });
      const sfu = await startSfuProcess(procs, { portRange: AGAINST_SFU_PORTS, root: other.root, cpuProfileDir: otherProfileDir, cpuProfileName: SAT_PROFILE });
      targets.push({ label: `against-${other.commit.slice(0, 7)}`, sfu, commit: other.commit });
    }
    const ours = await startSfuProcess(procs, { portRange: SFU_PORTS, cpuProfileDir: resultsDir, cpuProfileName: SAT_PROFILE, execArgv: THIS_SFU_ARGS });
    targets.push({ label: 'this', sfu: ours, commit: currentCommit() });
    const sweep = async (kind: 'audio' | 'video', subscriberSteps: number[]): Promise<SaturationResult[]> => {
      // Fresh load processes per kind (a publisher process sends one kind); the previous kind's
      // clients have left, so each sweep has the SFUs to itself.
      const publisher = forkWorker(procs, '_sfu-cheap-worker.ts');
      const subscribers = WERIFT_SUB_PORTS.map(() => forkWorker(procs, '_sfu-cheap-worker.ts'));
      try {
        return await runSaturation(
          targets,
          { publisher, subscribers },
          {
            room: `saturate-${kind}`,
            kind,
            publishers: SAT_PUBLISHERS,
            steps: subscriberSteps,
            warmupMs: 2000,
            windowMs: WINDOW_MS,
            windows: 3,
            sampleEvery: SAT_SAMPLE,
            budgetMs: 600_000,
            publisherPorts: SAT_PUBLISHER_PORTS,
            subscriberPorts: WERIFT_SUB_PORTS,
          },
          log,
        );
      } finally {
        await closeWorkers([publisher, ...subscribers]);
      }
    };
    let results: SaturationResult[];
    let videoResults: SaturationResult[];
    try {
      results = await sweep('audio', SAT_STEPS);
      videoResults = await sweep('video', SAT_VIDEO_STEPS);
    } finally {
      for (const t of targets) await stopSfu(t.sfu);
    }
    const floor = await runFloor(procs, { destinations: 100, streams: SAT_PUBLISHERS, windowMs: WINDOW_MS, windows: 3 });
    log(`floor (no werift, GCM, 1 in → ${floor.destinations} out): ${floor.usPerForwardedPacket} µs per forwarded packet at ${floor.forwardedPps} pps`);
    const percentOfFloor: Record<string, number | null> = {};
    const report = (kind: string, rs: SaturationResult[]) => {
      for (const r of rs) {
        const top = r.steps.toSorted((a, b) => b.forwardedPps - a.forwardedPps)[0];
        const pct = top ? round((top.usPerForwardedPacket / floor.usPerForwardedPacket) * 100) : null;
        if (kind === 'audio') percentOfFloor[r.label] = pct;
        log(
          `[${r.label} ${kind}] perCoreAtSaturation ${r.perCoreAtSaturation ?? `none (${r.whyNoSaturation})`}; ` +
            `µs/fwd pkt at the top step ${top?.usPerForwardedPacket ?? '-'}${kind === 'audio' ? ` = ${pct ?? '-'} % of the floor` : ''}; ` +
            `in-SFU p99 at half a core ${r.atHalfCore?.timeInSfuP99Ms ?? '-'} ms; RSS per participant ${r.rssPerParticipantMB} MB`,
        );
      }
      const mine = rs.find((r) => r.label === 'this');
      const theirs = rs.find((r) => r.label !== 'this');
      const ratio = mine && theirs ? ratios(theirs, mine) : undefined;
      for (const x of ratio ?? []) {
        log(`A/B ${kind} S=${x.subscribers}: this/other µs per forwarded packet ${x.usPerForwardedPacket}, pps per core ${x.ppsPerCore}, in-SFU p99 ${x.timeInSfuP99 ?? '-'}`);
      }
      let profile: ProfileSummary | null = null;
      if (mine && existsSync(profilePath)) {
        profile = summariseCpuProfile(profilePath, { windows: mine.monoWindows });
        log(`CPU profile of this SFU in the ${kind} saturation windows (${profilePath}):\n${formatProfileSummary(profile)}`);
      }
      return { ratio, profile };
    };
    const audio = report('audio', results);
    const video = report('video', videoResults);
    return {
      targets: targets.map((t) => ({ label: t.label, commit: t.commit })),
      results,
      ...(audio.ratio ? { ratioThisOverOther: audio.ratio } : {}),
      video: { results: videoResults, ...(video.ratio ? { ratioThisOverOther: video.ratio } : {}), profile: video.profile },
      floor,
      percentOfFloor,
      profile: audio.profile,
    };
  } finally {
    other?.remove();
  }
}

/** `--workers 1,2`: the worker counts to compare (undefined without the option). */
function workersArg(argv: string[]): number[] | undefined {
  const i = argv.indexOf('--workers');
  if (i < 0) return undefined;
  const counts = (argv[i + 1] ?? '').split(',').map(Number);
  if (!counts.length || counts.some((n) => !Number.isInteger(n) || n < 1)) throw new Error('--workers wants a list of worker counts, e.g. --workers 1,2');
  return [...new Set(counts)];
}

/**
 * The worker comparison's load (BENCH_SFU_WK_* knobs). Sized so that, with workers=1, the SFU
 * sits near half a core and the load processes fit in the other core with room to spare
 * (docs/media-workers.md, "Benchmark").
 */
const WK = {
  bigPublishers: Number(env.BENCH_SFU_WK_BIG_PUBLISHERS ?? 4),
  bigVideoPublishers: Number(env.BENCH_SFU_WK_BIG_VIDEO_PUBLISHERS ?? 1),
  bigSubscribers: Number(env.BENCH_SFU_WK_BIG_SUBSCRIBERS ?? 100),
  rooms: Number(env.BENCH_SFU_WK_ROOMS ?? 30),
  rounds: Number(env.BENCH_SFU_WK_ROUNDS ?? 7),
  warmupMs: Number(env.BENCH_SFU_WK_WARMUP_MS ?? 2000),
  windowMs: Number(env.BENCH_SFU_WK_WINDOW_MS ?? 5000),
};

export function resultName(): string {
  return workersArg(process.argv.slice(2)) ? 'sfu-workers' : 'sfu';
}

export async function run(): Promise<object> {
  const workerCounts = workersArg(process.argv.slice(2));
  if (workerCounts) {
    const procs = new ProcessSet();
    try {
      return await runWorkersBench(
        procs,
        {
          counts: workerCounts,
          rounds: WK.rounds,
          warmupMs: WK.warmupMs,
          windowMs: WK.windowMs,
          bigRoom: { publishers: WK.bigPublishers, videoPublishers: WK.bigVideoPublishers, subscribers: WK.bigSubscribers },
          smallRooms: { rooms: WK.rooms, publishersPerRoom: 3, listenersPerRoom: 2 },
          sampleEvery: SAT_SAMPLE,
          sfuPorts: SFU_PORTS,
          publisherPorts: SAT_PUBLISHER_PORTS,
          subscriberPorts: WERIFT_SUB_PORTS,
        },
        log,
      );
    } finally {
      await procs.killAll();
    }
  }
  const against = againstArg(process.argv.slice(2));
  if (against !== undefined) {
    const procs = new ProcessSet();
    try {
      const sat = await saturation(procs, against);
      const mine = sat.results.find((r) => r.label === 'this');
      return {
        summary: {
          perCoreAtSaturation: mine?.perCoreAtSaturation ?? null,
          videoPerCoreAtSaturation: sat.video.results.find((r) => r.label === 'this')?.perCoreAtSaturation ?? null,
          percentOfFloor: sat.percentOfFloor,
          against: sat.targets,
          machineLoad: loadavg().map((x) => round(x, 2)),
        },
        saturation: sat,
      };
    } finally {
      await procs.killAll();
    }
  }
  return await runAll();
}

async function runAll(): Promise<object> {
  const t0 = performance.now();
  const loadAtStart = loadavg().map((x) => round(x, 2));
  mkdirSync(resultsDir, { recursive: true });
  const profilePath = join(resultsDir, PROFILE_NAME);
  if (existsSync(profilePath)) rmSync(profilePath);
  const procs = new ProcessSet();
  try {
    // 1. Network baseline for the latency figure (no SFU involved).
    const werift = forkWorker(procs, '_sfu-werift-worker.ts');
    const baseline = await ask<{ samples: number; p50Ms: number; p99Ms: number; maxMs: number }>(
      werift,
      { type: 'baseline', durationMs: 5000, portRange: WERIFT_PORTS },
      30_000,
    );
    log(`werift direct baseline: p50 ${baseline.p50Ms} ms, p99 ${baseline.p99Ms} ms`);

    // 2. Audio fan-out on a profiled SFU: rtc-node subscribers, then werift subscribers (cheaper
    //    per packet, so the sweep can go further before the clients take the second core).
    const sfu = await startSfuProcess(procs, { portRange: SFU_PORTS, cpuProfileDir: resultsDir, cpuProfileName: PROFILE_NAME });
    const sweeps: FanoutResult[] = [];
    const idleRss = sampleProc(sfu.pid)?.rssBytes ?? 0;
    const common = { publishers: PUBLISHERS, warmupMs: 3000, windowMs: WINDOW_MS, windows: 3, saturatePercent: 90 };
    try {
      await ask(werift, { type: 'latencyStart', wsUrl: sfu.wsUrl, room: 'latency', portRange: WERIFT_PORTS }, 40_000);
      {
        const publisher = rtcWorker(procs);
        const subscribers = Array.from({ length: SUBSCRIBER_WORKERS }, () => rtcWorker(procs));
        try {
          sweeps.push(
            await runFanout(
              sfu,
              { publisher, subscribers, latency: werift },
              { ...common, room: 'fanout-rtc', subscriberKind: 'rtc-node', steps: RTC_STEPS, budgetMs: 150_000, joinProbes: 7 },
              log,
            ),
          );
        } finally {
          await closeWorkers([publisher, ...subscribers]);
        }
      }
      {
        const publisher = rtcWorker(procs);
        const subscribers = WERIFT_SUB_PORTS.map(() => forkWorker(procs, '_sfu-werift-worker.ts'));
        try {
          sweeps.push(
            await runFanout(
              sfu,
              { publisher, subscribers, latency: werift },
              {
                ...common,
                room: 'fanout-werift',
                subscriberKind: 'werift',
                subscriberPortRanges: WERIFT_SUB_PORTS,
                steps: WERIFT_STEPS,
                budgetMs: 180_000,
                joinProbes: 0,
              },
              log,
            ),
          );
        } finally {
          await closeWorkers([publisher, ...subscribers]);
        }
      }
      await ask(werift, { type: 'close' }, 15_000).catch(() => undefined);
    } catch (err) {
      throw new Error(`${(err as Error).message}\nSFU output: ${sfu.tail().slice(-2000)}`, { cause: err });
    } finally {
      await stopSfu(sfu);
    }

    let profile: ProfileSummary | undefined;
    let profileAll: ProfileSummary | undefined;
    if (existsSync(profilePath)) {
      profile = summariseCpuProfile(profilePath, { windows: sweeps.flatMap((f) => f.monoWindows) });
      profileAll = summariseCpuProfile(profilePath, { topN: 10 });
      log(`CPU profile of the fan-out steady-state windows (${profilePath}):\n${formatProfileSummary(profile)}`);
    } else log('no CPU profile was written');

    const svgPath = join(resultsDir, 'sfu-fanout.svg');
    writeFileSync(
      svgPath,
      fanoutSvg(
        sweeps.map((f) => ({
          label: `${PUBLISHERS} publishers, ${f.subscriberKind} subscribers`,
          points: f.steps.map((st) => ({ subscribers: st.subscribers, forwardedPps: st.forwardedPps, cpuPercent: st.median.sfuCpuPercent })),
        })),
        'SFU audio fan-out: forwarded packets/s against SFU CPU',
      ),
    );
    log(`wrote ${svgPath}`);

    // 3. Video room on a fresh SFU (no profiler).
    const sfu2 = await startSfuProcess(procs, { portRange: SFU_PORTS });
    let video: Record<string, unknown>;
    try {
      const camWorker = rtcWorker(procs);
      const viewerWorker = rtcWorker(procs);
      const weriftVideo = forkWorker(procs, '_sfu-werift-worker.ts');
      try {
        video = await runVideoRoom(
          sfu2,
          { publisher: camWorker, subscriber: viewerWorker, werift: weriftVideo },
          {
            publishers: 2,
            rtcNodeSubscribers: 2,
            sizes: [
              { label: 'small', width: 160, height: 90 },
              { label: 'small', width: 160, height: 90 },
              { label: 'medium', width: 320, height: 180 },
              { label: 'medium', width: 320, height: 180 },
              { label: 'large', width: 1280, height: 720 },
              { label: 'large', width: 1280, height: 720 },
            ],
            video: { width: 960, height: 540, fps: 15, maxBitrate: 1_200_000 },
            warmupMs: 6000,
            windowMs: WINDOW_MS,
            windows: 3,
            portRange: WERIFT_PORTS,
          },
          log,
        );
      } finally {
        await closeWorkers([camWorker, viewerWorker]);
        await ask(weriftVideo, { type: 'close' }, 15_000).catch(() => undefined);
      }
    } finally {
      await stopSfu(sfu2);
    }

    // 4-5. Saturation sweep and floor (this tree only).
    const sat = await saturation(procs, undefined);
    const satMine = sat.results.find((r) => r.label === 'this');

    const allSteps = sweeps.flatMap((f) => f.steps.map((st) => ({ kind: f.subscriberKind, ...st })));
    const top = allSteps.toSorted((a, b) => b.forwardedPps - a.forwardedPps)[0];
    const inSfu = (p: 'p50Ms' | 'p99Ms') =>
      allSteps.map((st) => ({
        subscribers: `${st.subscribers} ${st.kind}`,
        forwardedPps: st.forwardedPps,
        ms: st.latencyThroughSfu ? round(st.latencyThroughSfu[p] - baseline[p], 3) : null,
      }));
    const joinTime = sweeps.find((f) => f.joinTime)?.joinTime;
    const result = {
      summary: {
        perCoreAtSaturation: satMine?.perCoreAtSaturation ?? null,
        videoPerCoreAtSaturation: sat.video.results.find((r) => r.label === 'this')?.perCoreAtSaturation ?? null,
        percentOfFloor: sat.percentOfFloor,
        audioFanout: allSteps.map((s) => ({
          subscriberClient: s.kind,
          publishers: PUBLISHERS,
          subscribers: s.subscribers,
          forwardedPps: s.forwardedPps,
          deliveryRatio: s.deliveryRatio,
          sfuCpuPercent: s.median.sfuCpuPercent,
          machineCpuPercent: s.median.machineCpuPercent,
          usPerForwardedPacket: s.usPerForwardedPacket,
          usPerPacketInOut: s.usPerPacketInOut,
          clientCpuPercent: s.median.clientCpuPercent,
          sfuRssMB: s.median.sfuRssMB,
          latencyP50Ms: s.latencyThroughSfu?.p50Ms ?? null,
          latencyP99Ms: s.latencyThroughSfu?.p99Ms ?? null,
        })),
        stoppedBecause: Object.fromEntries(sweeps.map((f) => [f.subscriberKind, f.stoppedBecause])),
        peakForwardedPps: top?.forwardedPps ?? 0,
        usPerForwardedPacketAtPeak: top?.usPerForwardedPacket ?? null,
        projectedForwardedPpsPerCore: top && top.usPerForwardedPacket > 0 ? Math.round(1e6 / top.usPerForwardedPacket) : null,
        liveKitReferencePpsPerCore: 60_000,
        timeInSfuMs: {
          method:
            'werift publisher stamps performance.now() into the payload, werift subscriber in the same process reads it; minus the same path without an SFU (direct werift PC pair), per percentile',
          baselineDirect: baseline,
          p50ByStep: inSfu('p50Ms'),
          p99ByStep: inSfu('p99Ms'),
          sfuHistogram: top?.sfuHistogramLatencyMs ?? 'livekit_forward_latency_seconds not populated by the SFU',
        },
        joinTime,
        memory: {
          idleRssMB: round(idleRss / 2 ** 20),
          rssPerParticipantMB: Object.fromEntries(sweeps.map((f) => [f.subscriberKind, f.rssPerParticipantMB])),
          method: 'least-squares slope of the SFU RSS (median per step) against participants in the room, per sweep (one SFU process, rtc-node sweep first)',
        },
        video: Object.fromEntries(Object.entries(video).filter(([k]) => k !== 'windows')),
        benchmarkSeconds: 0,
        /** 1/5/15-minute load averages: other work on the machine skews every figure above. */
        machineLoad: { atStart: loadAtStart, atEnd: loadavg().map((x) => round(x, 2)) },
      },
      profile: profile ? { file: profilePath, steadyStateWindows: profile, wholeRun: profileAll } : null,
      chart: svgPath,
      fanoutSweeps: sweeps.map((f) => ({ subscriberKind: f.subscriberKind, stoppedBecause: f.stoppedBecause, steps: f.steps })),
      video,
      saturation: sat,
    };
    result.summary.benchmarkSeconds = round((performance.now() - t0) / 1000);
    log(`done in ${result.summary.benchmarkSeconds} s`);
    return result;
  } finally {
    await procs.killAll();
  }
}
