// Call a callbridge agent from the browser: the webRtc medium's WHIP joinUrl (RFC 9725), no framework.
//
//   import { callAgent } from "/console/static/webrtc.js";
//   const call = await callAgent({ agentId, apiKey, audioElement, onState: (s) => console.log(s) });
//   ...
//   await call.hangUp();
//
// The offer is posted once ICE gathering is complete (the endpoint takes no trickled candidates). The
// peer connection uses no STUN or TURN server: callbridge offers its host addresses
// (CALLBRIDGE_WEBRTC_HOST_ADDRESSES), which the browser must be able to reach. The page must be served
// from callbridge's own origin (CALLBRIDGE_PUBLIC_URL): the joinUrl and its session URL send no CORS
// headers.
//
// Headless Chromium on a machine whose tests stay on loopback: Chromium gathers no candidate on a
// loopback interface (with only `lo` its offer has none: 400 no_ice_candidates), and hides host
// addresses behind mDNS names. What works: server and browser in one network namespace of their own
// (`unshare -n`, `ip link set lo up`, a veth pair with an address, e.g. 198.51.100.1/24, up), the server
// with CALLBRIDGE_WEBRTC_HOST_ADDRESSES=127.0.0.1, Chromium with --use-fake-ui-for-media-stream
// --use-fake-device-for-media-stream --autoplay-policy=no-user-gesture-required
// --disable-features=WebRtcHideLocalIpsWithMdns.

const ICE_GATHERING_TIMEOUT_MS = 5000;

async function errorText(response) {
  const body = await response.text();
  try {
    const parsed = JSON.parse(body);
    if (parsed && parsed.detail) return `${response.status} ${parsed.code}: ${parsed.detail}`;
  } catch (_) {
    // not the API's error shape: the raw body says what it says
  }
  return `${response.status} ${body || response.statusText}`;
}

function iceGatheringComplete(peerConnection) {
  if (peerConnection.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (peerConnection.iceGatheringState !== "complete") return;
      peerConnection.removeEventListener("icegatheringstatechange", done);
      clearTimeout(timer);
      resolve();
    };
    // Some browsers never report "complete" with no STUN server: post what was gathered by then.
    const timer = setTimeout(() => {
      peerConnection.removeEventListener("icegatheringstatechange", done);
      resolve();
    }, ICE_GATHERING_TIMEOUT_MS);
    peerConnection.addEventListener("icegatheringstatechange", done);
  });
}

/**
 * Start a call to `agentId` and connect this browser to it.
 *
 * @param {object} options
 * @param {string} options.agentId
 * @param {string} options.apiKey        sent as X-API-Key to create the call (the joinUrl needs none)
 * @param {string} [options.baseUrl=""]  callbridge's base URL ("" = this page's origin)
 * @param {HTMLAudioElement} options.audioElement  plays the agent (autoplay)
 * @param {(state: string) => void} [options.onState]  "creating call", "connecting", "connected",
 *   "disconnected", "ended", or "error: ..." as the call goes
 * @param {(message: object) => void} [options.onMessage]  the call's data messages, as on a
 *   serverWebSocket call: call_started, state (listening/speaking), transcript
 * @returns {Promise<{callId: string, hangUp: () => Promise<void>, peerConnection: RTCPeerConnection}>}
 */
export async function callAgent({
  agentId,
  apiKey,
  baseUrl = "",
  audioElement,
  onState = () => {},
  onMessage = () => {},
}) {
  let peerConnection = null;
  let microphone = null;
  let ended = false;

  const stopMedia = () => {
    if (peerConnection) peerConnection.close();
    if (microphone) microphone.getTracks().forEach((track) => track.stop());
    if (audioElement) audioElement.srcObject = null;
  };
  const end = (state) => {
    if (ended) return;
    ended = true;
    stopMedia();
    onState(state);
  };

  try {
    onState("creating call");
    const created = await fetch(`${baseUrl}/api/agents/${encodeURIComponent(agentId)}/calls`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-API-Key": apiKey },
      body: JSON.stringify({ medium: { webRtc: {} } }),
    });
    if (!created.ok) throw new Error(`creating the call failed: ${await errorText(created)}`);
    const call = await created.json();

    microphone = await navigator.mediaDevices.getUserMedia({ audio: true });
    peerConnection = new RTCPeerConnection({ iceServers: [] });
    microphone.getAudioTracks().forEach((track) => peerConnection.addTrack(track, microphone));
    peerConnection.addEventListener("track", (event) => {
      if (event.track.kind !== "audio" || !audioElement) return;
      audioElement.autoplay = true;
      audioElement.srcObject = event.streams[0] || new MediaStream([event.track]);
      audioElement.play().catch(() => {}); // autoplay may wait for a user gesture; the call goes on
    });
    // The data channel: the call's data messages, and the first sign of the server hanging up (its
    // closing the channel arrives at once; the connection itself only turns "disconnected", later).
    const channel = peerConnection.createDataChannel("callbridge");
    channel.addEventListener("message", (event) => {
      try {
        onMessage(JSON.parse(event.data));
      } catch (_) {
        // not JSON: not one of callbridge's messages
      }
    });
    channel.addEventListener("close", () => end("ended"));
    let connected = false;
    peerConnection.addEventListener("connectionstatechange", () => {
      const state = peerConnection.connectionState;
      if (state === "connected") {
        connected = true;
        onState("connected");
      } else if (state === "disconnected") {
        onState("disconnected"); // may recover; "failed" follows if it does not
      } else if (state === "failed") {
        // After a call, this is how the server's hang-up (its DTLS close) usually shows.
        end(connected ? "ended" : "error: the connection failed (ICE or DTLS)");
      } else if (state === "closed") {
        end("ended");
      }
    });

    onState("connecting");
    await peerConnection.setLocalDescription(await peerConnection.createOffer());
    await iceGatheringComplete(peerConnection);

    const answered = await fetch(call.joinUrl, {
      method: "POST",
      headers: { "Content-Type": "application/sdp" },
      body: peerConnection.localDescription.sdp,
    });
    if (answered.status !== 201) throw new Error(`the joinUrl refused the offer: ${await errorText(answered)}`);
    // The session URL; relative to the joinUrl when the server gives a relative one.
    const location = new URL(answered.headers.get("Location") || `${call.joinUrl}/session`, call.joinUrl).href;
    await peerConnection.setRemoteDescription({ type: "answer", sdp: await answered.text() });

    const hangUp = async () => {
      if (ended) return;
      try {
        await fetch(location, { method: "DELETE" });
      } finally {
        end("ended");
      }
    };
    return { callId: call.callId, hangUp, peerConnection };
  } catch (error) {
    end(`error: ${error.message || error}`);
    throw error;
  }
}
