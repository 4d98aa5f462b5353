// A WebRTC call to rtgate, as to OpenAI's Realtime API: a client secret from our backend,
// an SDP offer to POST /v1/realtime/calls, the GA events on the "oai-events" data channel.
"use strict";

const state = { pc: null, channel: null, mic: null, callUrl: null, secret: null,
                events: [], level: 0, done: 0, error: null };
window.rtgateCall = state; // for tests and the console

const $ = (id) => document.getElementById(id);
const status = (text) => { $("status").textContent = text; };

function line(cls, text) {
  const p = document.createElement("p");
  p.className = cls;
  p.textContent = text;
  $("transcript").appendChild(p);
  return p;
}

function onEvent(event) {
  state.events.push(event.type);
  if (event.type === "response.output_audio_transcript.delta" || event.type === "response.output_text.delta") {
    state.current = state.current || line("model", "");
    state.current.textContent += event.delta;
  } else if (event.type === "response.done") {
    state.current = null;
    state.done += 1;
  } else if (event.type === "conversation.item.input_audio_transcription.completed") {
    line("user", event.transcript);
  } else if (event.type === "error") {
    line("error", "error: " + event.error.message);
  }
}

// The remote track's level (WebAudio), so a page (or a test) sees the model's audio arrive.
function measure(stream) {
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  analyser.fftSize = 1024;
  context.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let peak = 0;
    for (const s of samples) peak = Math.max(peak, Math.abs(s));
    state.level = Math.max(state.level, peak);
    $("level").textContent = "model audio peak: " + peak.toFixed(3);
  }, 50);
}

async function start() {
  $("call").disabled = true;
  try {
    status("getting a client secret");
    const minted = await (await fetch("/session" + location.search, { method: "POST" })).json();
    if (!minted.value) throw new Error(JSON.stringify(minted));
    state.secret = minted.value;
    const pc = state.pc = new RTCPeerConnection();
    pc.ontrack = (e) => { $("remote").srcObject = e.streams[0]; measure(e.streams[0]); };
    pc.onconnectionstatechange = () => status("call " + pc.connectionState);
    state.mic = await navigator.mediaDevices.getUserMedia({ audio: true });
    pc.addTrack(state.mic.getAudioTracks()[0], state.mic);
    const channel = state.channel = pc.createDataChannel("oai-events");
    channel.onmessage = (e) => onEvent(JSON.parse(e.data));
    status("calling");
    await pc.setLocalDescription(await pc.createOffer());
    const answer = await fetch(minted.rtgate + "/v1/realtime/calls", {
      method: "POST",
      body: pc.localDescription.sdp,
      headers: { "Authorization": "Bearer " + minted.value, "Content-Type": "application/sdp" },
    });
    if (answer.status !== 201) throw new Error(await answer.text());
    state.callUrl = new URL(answer.headers.get("Location"), minted.rtgate).href;
    await pc.setRemoteDescription({ type: "answer", sdp: await answer.text() });
    $("mic").disabled = $("hangup").disabled = false;
  } catch (err) {
    state.error = String(err);
    status("failed: " + err);
    $("call").disabled = false;
  }
}

function toggleMic() {
  const track = state.mic.getAudioTracks()[0];
  track.enabled = !track.enabled;
  $("mic").textContent = track.enabled ? "Mute microphone" : "Unmute microphone";
}

// Closing the peer connection ends the call (rtgate sees the DTLS close); a backend holding
// the key may also DELETE the call's Location.
function hangUp() {
  if (state.pc) state.pc.close();
  status("hung up");
  $("mic").disabled = $("hangup").disabled = true;
  $("call").disabled = false;
}

$("call").onclick = start;
$("mic").onclick = toggleMic;
$("hangup").onclick = hangUp;
