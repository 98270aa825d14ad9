// The connectivity test page's logic (plain browser JS, loaded as a module after livekit-client's
// UMD build, which defines window.LivekitClient). "Join" connects two livekit-client Rooms to the
// same room: a receiver first, then a sender that publishes the camera and microphone; the
// receiver's copy of that media is shown and played, so it has been through the SFU. Every
// second the ICE candidate type, RTT, packet loss and bitrate of both peer connections are read
// from RTCPeerConnection.getStats() (room.engine.pcManager) into the table. Status line states:
// idle -> connecting -> connected, or error with the reason.

const LK = window.LivekitClient;
const $ = (id) => document.getElementById(id);

/** @type {{sender?: any, receiver?: any, timer?: number, leaving: boolean, previous: Map<string, {bytes: number, at: number}>}} */
const session = { leaving: false, previous: new Map() };

function setStatus(state, text) {
  const el = $('status');
  el.dataset.state = state;
  el.textContent = text;
}

function setMediaStatus(text) {
  $('media-status').textContent = text;
}

function randomSuffix() {
  return Math.random().toString(36).slice(2, 8);
}

function defaultUrl() {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
}

function setBusy(busy) {
  $('join-dev').disabled = busy;
  $('join-pasted').disabled = busy;
  $('leave').disabled = !busy;
}

async function fetchDevToken(room, identity) {
  const res = await fetch('token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ room, identity }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok || typeof body.token !== 'string') {
    throw new Error(`dev token refused (${res.status}): ${body.error ?? res.statusText}`);
  }
  return body.token;
}

function describeError(err) {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}

function newRoom() {
  return new LK.Room({ adaptiveStream: false, dynacast: false });
}

function watchDisconnect(room, who) {
  room.on(LK.RoomEvent.Disconnected, (reason) => {
    if (session.leaving) return;
    const name = LK.DisconnectReason?.[reason] ?? String(reason);
    setStatus('error', `Disconnected (${who}): ${name}`);
    void leave(false);
  });
  room.on(LK.RoomEvent.Reconnecting, () => {
    if (!session.leaving) setStatus('connecting', `Reconnecting (${who})…`);
  });
  room.on(LK.RoomEvent.Reconnected, () => {
    if (!session.leaving) setStatus('connected', 'Connected again');
  });
}

/** Connects the receiver, then the sender, and publishes; `receiverToken` may be absent. */
async function join(url, senderToken, receiverToken) {
  session.leaving = false;
  session.previous.clear();
  setBusy(true);
  setStatus('connecting', `Connecting to ${url}…`);
  setMediaStatus('');
  try {
    if (receiverToken) {
      const receiver = newRoom();
      session.receiver = receiver;
      watchDisconnect(receiver, 'receiving participant');
      receiver.on(LK.RoomEvent.TrackSubscribed, (track) => {
        if (track.kind === 'video') track.attach($('returned-video'));
        else if (track.kind === 'audio') {
          const audio = $('returned-audio');
          track.attach(audio);
          audio.muted = !$('play-audio').checked;
        }
      });
      await receiver.connect(url, receiverToken);
    }
    const sender = newRoom();
    session.sender = sender;
    watchDisconnect(sender, 'publishing participant');
    await sender.connect(url, senderToken);
    const problems = [];
    await sender.localParticipant.setCameraEnabled(true).catch((err) => problems.push(`camera: ${describeError(err)}`));
    await sender.localParticipant.setMicrophoneEnabled(true).catch((err) => problems.push(`microphone: ${describeError(err)}`));
    if (problems.length === 2) throw new Error(`nothing to publish (${problems.join('; ')})`);
    const camera = sender.localParticipant.getTrackPublication(LK.Track.Source.Camera)?.track;
    if (camera) camera.attach($('local-video'));
    const where = `room ${sender.name} as ${sender.localParticipant.identity}`;
    setStatus('connected', `Connected to ${url}, ${where}${problems.length ? ` — ${problems.join('; ')}` : ''}`);
    setMediaStatus(
      receiverToken
        ? 'Waiting for your media to come back through the SFU…'
        : 'Publishing only: paste a second token to see and hear yourself through the SFU.',
    );
    session.timer = window.setInterval(() => void refreshStats(), 1000);
    void refreshStats();
  } catch (err) {
    setStatus('error', `Could not connect: ${describeError(err)}`);
    await leave(false);
  }
}

async function leave(resetStatus) {
  session.leaving = true;
  if (session.timer !== undefined) window.clearInterval(session.timer);
  session.timer = undefined;
  const rooms = [session.sender, session.receiver].filter(Boolean);
  session.sender = undefined;
  session.receiver = undefined;
  await Promise.allSettled(rooms.map((r) => r.disconnect()));
  for (const id of ['returned-video', 'local-video', 'returned-audio']) $(id).srcObject = null;
  setBusy(false);
  if (resetStatus) {
    setStatus('idle', 'Not connected.');
    setMediaStatus('');
  }
}

// ---- statistics ---------------------------------------------------------------------------

/** getStats() of a room's peer connections, or [] (pcManager is livekit-client's engine state). */
async function reportsOf(room, which) {
  const pcm = room?.engine?.pcManager;
  if (!pcm) return [];
  const transports = which === 'send' ? [pcm.publisher] : [pcm.subscriber ?? pcm.publisher];
  const reports = await Promise.all(transports.filter(Boolean).map((t) => t.getStats()));
  return reports.filter(Boolean);
}

function selectedPair(report) {
  let pair;
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
  });
  if (!pair) {
    report.forEach((s) => {
      if (!pair && s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
    });
  }
  return pair;
}

function summarize(reports, direction) {
  const out = { candidate: undefined, path: undefined, rttMs: undefined, bytes: 0, lost: undefined, packets: 0, at: 0 };
  for (const report of reports) {
    const pair = selectedPair(report);
    if (pair) {
      const local = report.get(pair.localCandidateId);
      const remote = report.get(pair.remoteCandidateId);
      out.candidate = local?.candidateType;
      if (typeof pair.currentRoundTripTime === 'number') out.rttMs = pair.currentRoundTripTime * 1000;
      if (local && remote) {
        out.path = `${local.protocol ?? ''} ${local.candidateType} ${local.address ?? local.ip ?? '?'}:${local.port}` +
          ` ↔ ${remote.candidateType} ${remote.address ?? remote.ip ?? '?'}:${remote.port}`;
      }
    }
    report.forEach((s) => {
      out.at = Math.max(out.at, s.timestamp ?? 0);
      if (direction === 'send' && s.type === 'outbound-rtp') {
        out.bytes += s.bytesSent ?? 0;
        out.packets += s.packetsSent ?? 0;
      } else if (direction === 'send' && s.type === 'remote-inbound-rtp' && typeof s.packetsLost === 'number') {
        out.lost = (out.lost ?? 0) + Math.max(0, s.packetsLost);
      } else if (direction === 'recv' && s.type === 'inbound-rtp') {
        out.bytes += s.bytesReceived ?? 0;
        out.packets += s.packetsReceived ?? 0;
        out.lost = (out.lost ?? 0) + Math.max(0, s.packetsLost ?? 0);
      }
    });
  }
  return out;
}

function formatBitrate(direction, summary) {
  const before = session.previous.get(direction);
  session.previous.set(direction, { bytes: summary.bytes, at: summary.at });
  if (!before || summary.at <= before.at) return { text: '—', kbps: undefined };
  const kbps = ((summary.bytes - before.bytes) * 8) / (summary.at - before.at);
  return { text: kbps >= 1000 ? `${(kbps / 1000).toFixed(2)} Mbit/s` : `${kbps.toFixed(0)} kbit/s`, kbps };
}

function show(id, text, value) {
  const el = $(id);
  el.textContent = text;
  if (value === undefined) delete el.dataset.value;
  else el.dataset.value = String(value);
}

function showSummary(direction, summary) {
  show(`${direction}-candidate`, summary.candidate ?? '—', summary.candidate);
  show(`${direction}-rtt`, summary.rttMs === undefined ? '—' : `${summary.rttMs.toFixed(1)} ms`, summary.rttMs);
  if (summary.lost === undefined) {
    show(`${direction}-loss`, direction === 'send' ? 'not reported by the SFU' : '—', undefined);
  } else {
    const total = summary.lost + summary.packets;
    const pct = total > 0 ? (100 * summary.lost) / total : 0;
    show(`${direction}-loss`, `${pct.toFixed(1)} % (${summary.lost} of ${total} packets)`, pct);
  }
  const bitrate = formatBitrate(direction, summary);
  show(`${direction}-bitrate`, bitrate.text, bitrate.kbps);
  show(`${direction}-path`, summary.path ?? '—', undefined);
}

function showReturnedMedia() {
  const video = $('returned-video');
  const frames = video.getVideoPlaybackQuality?.().totalVideoFrames ?? 0;
  if (video.videoWidth > 0 && frames > 0) {
    $('video-info').textContent = `(${video.videoWidth}×${video.videoHeight}, ${frames} frames)`;
    setMediaStatus('Your video is coming back through the SFU' +
      ($('returned-audio').srcObject ? ' with your audio.' : '; no audio yet.'));
  }
}

async function refreshStats() {
  const { sender, receiver } = session;
  try {
    const [send, recv] = await Promise.all([reportsOf(sender, 'send'), reportsOf(receiver, 'recv')]);
    if (send.length) showSummary('send', summarize(send, 'send'));
    if (recv.length) showSummary('recv', summarize(recv, 'recv'));
    if (receiver) showReturnedMedia();
  } catch (err) {
    console.warn('connectivity page: reading stats failed', err);
  }
}

// ---- wiring --------------------------------------------------------------------------------

$('lk-version').textContent = LK?.version ?? '(not loaded)';
$('url').value = defaultUrl();
$('room').value = `connectivity-test-${randomSuffix()}`;
$('identity').value = `tester-${randomSuffix()}`;

$('join-dev').addEventListener('click', async () => {
  const room = $('room').value.trim();
  const identity = $('identity').value.trim();
  setBusy(true);
  setStatus('connecting', 'Asking the SFU for dev tokens…');
  try {
    const [senderToken, receiverToken] = await Promise.all([
      fetchDevToken(room, identity),
      fetchDevToken(room, `${identity}-echo`),
    ]);
    await join($('url').value.trim(), senderToken, receiverToken);
  } catch (err) {
    setStatus('error', describeError(err));
    setBusy(false);
  }
});

$('join-pasted').addEventListener('click', () => {
  const token = $('token').value.trim();
  if (!token) {
    setStatus('error', 'Paste a token first (the second one is optional).');
    return;
  }
  void join($('url').value.trim(), token, $('token2').value.trim() || undefined);
});

$('leave').addEventListener('click', () => void leave(true));
$('play-audio').addEventListener('change', () => {
  $('returned-audio').muted = !$('play-audio').checked;
});
window.addEventListener('pagehide', () => void leave(false));

if (!LK) setStatus('error', 'livekit-client did not load (livekit-client.umd.js)');
else if (!window.isSecureContext) {
  setStatus('error', 'Browsers allow the camera and microphone only on https:// or localhost: open this page through your TLS proxy.');
}
