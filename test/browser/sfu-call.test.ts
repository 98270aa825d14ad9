/**
 * Two headless-Chromium participants running the real livekit-client join one room through the
 * SFU with livekit-server-sdk tokens, publish camera and microphone (fake devices) and each
 * decodes the other's video and receives their audio; mute, unmute, unpublish and leave show
 * up at the other side as the matching livekit-client events.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  joinFromPage,
  browserScene,
  leaveFromPage,
  publishCameraAndMic,
  receivedStats,
  waitForMediaFrom,
  waitForPageEvent,
} from './sfu-browser-client.ts';
import { waitFor } from '../support/wait.ts';
import { RemoteDownTrack } from '../../sfu/media/workers/proxies.ts';

describe('sfu call between two livekit-client browsers', () => {
  const scene = browserScene();
  afterEach((ctx) => scene.end(ctx.task.result?.state === 'fail'));

  it('both publish camera and microphone and each decodes the other within 10 s of joining', async () => {
    const sfu = await scene.start();
    const alice = await scene.page();
    const bob = await scene.page();

    await Promise.all([
      joinFromPage(alice.page, sfu.wsUrl, await sfu.token('alice')),
      joinFromPage(bob.page, sfu.wsUrl, await sfu.token('bob')),
    ]);
    const joinedAt = Date.now();
    await Promise.all([publishCameraAndMic(alice.page), publishCameraAndMic(bob.page)]);

    const remaining = () => Math.max(1000, 10_000 - (Date.now() - joinedAt));
    const [atAlice, atBob] = await Promise.all([
      waitForMediaFrom(alice.page, 'bob', remaining()),
      waitForMediaFrom(bob.page, 'alice', remaining()),
    ]);
    expect(atAlice.find((s) => s.kind === 'video')!.framesDecoded).toBeGreaterThanOrEqual(10);
    expect(atBob.find((s) => s.kind === 'audio')!.packetsReceived).toBeGreaterThanOrEqual(20);

    // Decoding keeps going (not a single keyframe).
    const before = (await receivedStats(bob.page)).find((s) => s.kind === 'video')!.framesDecoded;
    await waitFor('more frames at bob', async () => {
      const now = (await receivedStats(bob.page)).find((s) => s.kind === 'video')!.framesDecoded;
      return now >= before + 10;
    });
  });

  it('shows join, mute, unmute, unpublish and leave as livekit-client events at the other side', async () => {
    const sfu = await scene.start();
    const alice = await scene.page();
    const bob = await scene.page();

    await joinFromPage(bob.page, sfu.wsUrl, await sfu.token('bob'));
    await joinFromPage(alice.page, sfu.wsUrl, await sfu.token('alice'));
    await waitForPageEvent(bob.page, (e) => e.type === 'participantConnected' && e.identity === 'alice', 'alice connected');
    await publishCameraAndMic(alice.page);
    const audioPub = await waitForPageEvent(
      bob.page,
      (e) => e.type === 'trackPublished' && e.identity === 'alice' && e.kind === 'audio',
      'alice audio published',
    );
    await waitForPageEvent(bob.page, (e) => e.type === 'trackSubscribed' && e.kind === 'video', 'video subscribed');

    await alice.page.evaluate(async () => {
      const room = window.testState.room as InstanceType<typeof window.LivekitClient.Room>;
      await room.localParticipant.setMicrophoneEnabled(false);
    });
    await waitForPageEvent(
      bob.page,
      (e) => e.type === 'trackMuted' && e.trackSid === audioPub.trackSid,
      'alice audio muted at bob',
    );
    await alice.page.evaluate(async () => {
      const room = window.testState.room as InstanceType<typeof window.LivekitClient.Room>;
      await room.localParticipant.setMicrophoneEnabled(true);
    });
    await waitForPageEvent(
      bob.page,
      (e) => e.type === 'trackUnmuted' && e.trackSid === audioPub.trackSid,
      'alice audio unmuted at bob',
    );

    // Unpublish the camera: the client only renegotiates; the SFU must notice the inactive m-line.
    await alice.page.evaluate(async () => {
      const room = window.testState.room as InstanceType<typeof window.LivekitClient.Room>;
      const pub = [...room.localParticipant.videoTrackPublications.values()][0];
      if (pub?.track) await room.localParticipant.unpublishTrack(pub.track);
    });
    await waitForPageEvent(
      bob.page,
      (e) => e.type === 'trackUnpublished' && e.identity === 'alice' && e.kind === 'video',
      'alice video unpublished at bob',
    );

    // Republish: bob decodes the new camera track.
    await alice.page.evaluate(async () => {
      const room = window.testState.room as InstanceType<typeof window.LivekitClient.Room>;
      await room.localParticipant.setCameraEnabled(true);
    });
    await waitForMediaFrom(bob.page, 'alice', 10_000, 5);

    await leaveFromPage(alice.page);
    await waitForPageEvent(
      bob.page,
      (e) => e.type === 'participantDisconnected' && e.identity === 'alice',
      'alice left at bob',
    );
  });
});

describe('sfu adaptive stream settings', () => {
  const scene = browserScene();
  afterEach((ctx) => scene.end(ctx.task.result?.state === 'fail'));

  it('stops forwarding a track the subscriber disabled and resumes decoding when re-enabled', async () => {
    const sfu = await scene.start();
    const alice = await scene.page();
    const bob = await scene.page();
    await joinFromPage(alice.page, sfu.wsUrl, await sfu.token('alice'));
    await joinFromPage(bob.page, sfu.wsUrl, await sfu.token('bob'));
    await publishCameraAndMic(alice.page);
    await waitForMediaFrom(bob.page, 'alice');

    const setVideoEnabled = (enabled: boolean) =>
      bob.page.evaluate((on) => {
        const room = window.testState.room as InstanceType<typeof window.LivekitClient.Room>;
        const alicePart = room.remoteParticipants.get('alice');
        for (const pub of alicePart?.videoTrackPublications.values() ?? []) pub.setEnabled(on);
      }, enabled);
    const room = sfu.sfu.rooms.getRoom('test-room')!;
    const bobState = room.participants.get('bob' as never)!;
    const aliceState = room.participants.get('alice' as never)!;
    const videoSid = [...aliceState.published.values()].find((t) => t.info.mimeType === 'video/VP8')!.info.sid;
    const audioSid = [...aliceState.published.values()].find((t) => t.info.mimeType === 'audio/opus')!.info.sid;

    await setVideoEnabled(false);
    const videoSub = await waitFor('video disabled at the SFU', () => {
      const sub = bobState.subscriptions.get(videoSid as never);
      return sub?.disabled ? sub : undefined;
    });
    const audioSub = bobState.subscriptions.get(audioSid as never)!;
    if (videoSub.down instanceof RemoteDownTrack) {
      // With media workers (SFU_TEST_WORKERS) a downtrack's counters are the worker's snapshot,
      // posted once a second: the one read now may predate the worker applying the disable.
      // Two fresh snapshots later, the count includes everything sent before the disable.
      for (let i = 0; i < 2; i++) {
        const seen = audioSub.down.packetsSent;
        await waitFor('a fresh stats snapshot from the media worker', () => audioSub.down.packetsSent > seen);
      }
    }
    const videoSent = videoSub.down.packetsSent;
    const audioSent = audioSub.down.packetsSent;
    // Audio goes on (time passes, media flows) while not one more video packet goes out.
    await waitFor('more audio forwarded', () => audioSub.down.packetsSent >= audioSent + 50);
    expect(videoSub.down.packetsSent).toBe(videoSent);

    const decodedBefore = (await receivedStats(bob.page)).find((s) => s.kind === 'video')!.framesDecoded;
    await setVideoEnabled(true);
    await waitFor('decoding resumed', async () => {
      const v = (await receivedStats(bob.page)).find((s) => s.kind === 'video');
      return v && v.framesDecoded >= decodedBefore + 10;
    });
  });
});
