// The callbridge console: agents, calls (live), a call's timeline and levels, calling an agent.
// Every /api request carries X-API-Key; the key is kept in this tab's sessionStorage.

const KEY = "callbridge.apiKey";
const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, body) {
    super(body.code ? `${body.code}: ${body.detail}` : `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = { "X-API-Key": sessionStorage.getItem(KEY) ?? "", ...(options.headers ?? {}) };
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    throw new ApiError(response.status, await response.json().catch(() => ({})));
  }
  return response;
}

const getJson = async (path) => (await api(path)).json();

// Server-sent events read with fetch (EventSource cannot send X-API-Key): yields {event, data}.
async function* serverEvents(path, signal) {
  const response = await api(path, { signal, headers: { Accept: "text/event-stream" } });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) yield { event, data: JSON.parse(data) };
    }
  }
}

// h("td", {class: "x"}, "text", child): a DOM element (text is never parsed as HTML).
function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  element.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return element;
}

const time = (iso) => (iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 23) : "");
const seconds = (duration) => `${parseFloat(duration).toFixed(3)} s`;
const link = (href, text) => h("a", { href }, text);
const errorLine = (error) => h("p", { class: "error", role: "alert" }, error.message);

// --- views ---------------------------------------------------------------------------------------------

async function agentsView(view) {
  const page = await getJson("/api/agents?pageSize=200");
  view.replaceChildren(
    h("h1", {}, "Agents"),
    page.results.length === 0 ? h("p", { class: "muted" }, "No agents yet (POST /api/agents).") : null,
    h(
      "table",
      { id: "agents" },
      h("tr", {}, ["Name", "Agent id", "Pipeline", "Calls", "Created (UTC)"].map((name) => h("th", {}, name))),
      page.results.map((agent) =>
        h(
          "tr",
          { "data-agent-id": agent.agentId },
          h("td", {}, link(`#/agents/${agent.agentId}`, agent.name)),
          h("td", { class: "mono" }, agent.agentId),
          h("td", {}, Object.keys(agent.callTemplate.pipeline ?? {}).join(", ") || "default"),
          h("td", {}, String(agent.statistics?.calls ?? 0)),
          h("td", {}, time(agent.created)),
        ),
      ),
    ),
  );
}

// The call this tab places from an agent's page. It outlives the page (the call's timeline can be opened
// meanwhile), so an agent's page draws its controls from here.
const browserCall = { agentId: null, call: null, live: false, state: "", redraw: () => {} };

async function startBrowserCall(agentId) {
  const update = (changes) => {
    Object.assign(browserCall, changes);
    browserCall.redraw();
  };
  update({ agentId, call: null, live: true, state: "starting" });
  const onState = (text) => update({ state: text, live: browserCall.live && text !== "ended" && !text.startsWith("error") });
  try {
    const { callAgent } = await import("./webrtc.js");
    const call = await callAgent({ agentId, apiKey: sessionStorage.getItem(KEY), audioElement: $("agent-audio"), onState });
    update({ call });
  } catch (error) {
    update({ live: false, state: `could not call: ${error.message}` });
  }
}

function callControls(agentId) {
  const callButton = h("button", { id: "call-agent", type: "button" }, "Call this agent");
  const hangUp = h("button", { id: "hang-up", type: "button" }, "Hang up");
  const state = h("span", { id: "call-state", class: "muted" });
  const callLink = h("span", { id: "call-link" });
  callButton.addEventListener("click", () => startBrowserCall(agentId));
  hangUp.addEventListener("click", () => browserCall.call?.hangUp());
  browserCall.redraw = () => {
    const ours = browserCall.agentId === agentId;
    const { call, live } = browserCall;
    callButton.disabled = live;
    hangUp.disabled = !(ours && live && call);
    state.textContent = ours ? browserCall.state : live ? "a call to another agent is on" : "";
    callLink.replaceChildren(ours && call ? link(`#/calls/${call.callId}`, `call ${call.callId}`) : "");
  };
  browserCall.redraw();
  return h("div", { class: "call-controls" }, callButton, hangUp, state, callLink);
}

async function agentView(view, agentId) {
  const agent = await getJson(`/api/agents/${encodeURIComponent(agentId)}`);
  view.replaceChildren(
    h("h1", {}, `Agent ${agent.name}`),
    h("p", { class: "mono" }, agent.agentId),
    callControls(agentId),
    h("p", {}, `Calls: ${agent.statistics?.calls ?? 0}. Created ${time(agent.created)} UTC.`),
    h("h2", {}, "Call template"),
    h("pre", { id: "template" }, JSON.stringify(agent.callTemplate, null, 2)),
  );
}

function callRow(call) {
  const kind = Object.keys(call.medium ?? {})[0] ?? "";
  const status = call.ended ? call.endReason : call.joined ? "live" : "waiting";
  return h(
    "tr",
    { "data-call-id": call.callId, "data-status": status },
    h("td", {}, link(`#/calls/${call.callId}`, call.callId)),
    h("td", { class: call.ended ? "" : "live" }, status),
    h("td", {}, kind),
    h("td", { class: "mono" }, call.agentId ?? ""),
    h("td", {}, time(call.created)),
    h("td", {}, time(call.ended)),
    h("td", {}, call.billedDuration),
  );
}

function callsTable(id, calls) {
  const head = ["Call", "Status", "Medium", "Agent", "Created (UTC)", "Ended (UTC)", "Billed"];
  return h(
    "table",
    { id },
    h("tr", {}, head.map((name) => h("th", {}, name))),
    calls.map(callRow),
  );
}

async function callsView(view, signal) {
  const calls = new Map();
  for (const call of (await getJson("/api/calls?pageSize=100")).results) calls.set(call.callId, call);
  const draw = () => {
    const all = [...calls.values()].sort((a, b) => b.created.localeCompare(a.created));
    const live = all.filter((c) => !c.ended);
    const ended = all.filter((c) => c.ended);
    view.replaceChildren(
      h("h1", {}, "Calls"),
      h("h2", {}, `Live (${live.length})`),
      live.length ? callsTable("live-calls", live) : h("p", { id: "live-calls", class: "muted" }, "No live call."),
      h("h2", {}, "Ended"),
      callsTable("ended-calls", ended),
    );
  };
  draw();
  while (!signal.aborted) {
    try {
      for await (const { event, data } of serverEvents("/api/calls/stream", signal)) {
        if (event === "call") {
          calls.set(data.callId, data);
          draw();
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, 2000)); // the stream closed: follow it again
  }
}

function levelRow(id, label) {
  const meter = h("meter", { id: `${id}-meter`, min: -90, max: 0, low: -50, high: -10, value: -90 });
  const text = h("span", { id, class: "mono", "data-dbfs": "" }, "–");
  return [h("span", {}, label), meter, text];
}

function showLevel(id, dbfs) {
  $(`${id}-meter`).value = dbfs ?? -90;
  $(id).dataset.dbfs = dbfs ?? "";
  $(id).textContent = dbfs === null ? "silence" : `${dbfs.toFixed(1)} dBFS`;
}

const EVENT_BADGES = { dtmf: "badge-dtmf", play_dtmf: "badge-dtmf", mark: "badge-mark" };

function eventRow(event) {
  return h(
    "tr",
    { class: `sev-${event.severity}`, "data-type": event.type },
    h("td", { class: "mono" }, time(event.wallClockTimestamp).slice(11)),
    h("td", { class: "mono" }, seconds(event.callTimestamp)),
    h("td", {}, event.severity),
    h("td", {}, h("span", { class: `badge ${EVENT_BADGES[event.type] ?? ""}` }, event.type)),
    h("td", {}, event.text, event.extras?.digit ? h("strong", {}, ` [${event.extras.digit}]`) : null),
  );
}

async function callView(view, callId, signal) {
  const call = await getJson(`/api/calls/${encodeURIComponent(callId)}`);
  const status = h("p", { id: "call-status" }, call.ended ? `ended: ${call.endReason}` : "live");
  const levelsNote = h("p", { id: "levels-note", class: "muted" }, "waiting for the call's audio…");
  const levels = h(
    "section",
    { id: "levels", hidden: !!call.ended },
    h("h2", {}, "Audio levels"),
    h("div", { class: "levels" }, levelRow("level-caller", "caller → agent"), levelRow("level-agent", "agent → caller")),
    levelsNote,
  );
  const events = h(
    "table",
    { id: "events" },
    h("tr", {}, ["Time (UTC)", "Call time", "Severity", "Type", "Text"].map((name) => h("th", {}, name))),
  );
  view.replaceChildren(
    h("h1", {}, "Call ", h("span", { class: "mono" }, callId)),
    h(
      "p",
      { id: "call-summary" },
      "Agent: ",
      call.agentId ? link(`#/agents/${call.agentId}`, call.agentId) : "none",
      ` · medium: ${Object.keys(call.medium)[0]} · created ${time(call.created)} UTC`,
    ),
    status,
    levels,
    h("h2", {}, "Events"),
    events,
  );
  for await (const { event, data } of serverEvents(`/api/calls/${encodeURIComponent(callId)}/events/stream`, signal)) {
    if (event === "call_event") events.append(eventRow(data));
    else if (event === "levels" && !data.available) levelsNote.textContent = data.reason;
    else if (event === "levels") {
      levelsNote.textContent = "RMS over the last quarter second";
      showLevel("level-caller", data.callerToAgent);
      showLevel("level-agent", data.agentToCaller);
    } else if (event === "ended") {
      status.textContent = `ended: ${data?.endReason ?? "unknown"}`;
      levels.hidden = true;
    }
  }
}

// --- routing -------------------------------------------------------------------------------------------

let running = null;

async function route() {
  running?.abort();
  running = new AbortController();
  const signal = running.signal;
  const view = $("view");
  const loggedIn = sessionStorage.getItem(KEY) !== null;
  $("login").hidden = loggedIn;
  $("nav").hidden = !loggedIn;
  if (!loggedIn) {
    view.replaceChildren();
    return;
  }
  const [, section, id] = (location.hash || "#/calls").slice(1).split("/");
  try {
    if (section === "agents" && id) await agentView(view, decodeURIComponent(id));
    else if (section === "agents") await agentsView(view);
    else if (section === "calls" && id) await callView(view, decodeURIComponent(id), signal);
    else await callsView(view, signal);
  } catch (error) {
    if (signal.aborted) return;
    if (error instanceof ApiError && error.status === 401) {
      sessionStorage.removeItem(KEY); // the key stopped working: ask again, saying why
      $("login-error").textContent = error.message;
      route();
      return;
    }
    view.append(errorLine(error));
  }
}

$("login").addEventListener("submit", async (submitted) => {
  submitted.preventDefault();
  const key = $("api-key").value.trim();
  sessionStorage.setItem(KEY, key);
  try {
    await api("/api/agents?pageSize=1");
    $("login-error").textContent = "";
    $("api-key").value = "";
    route();
  } catch (error) {
    sessionStorage.removeItem(KEY);
    $("login-error").textContent = error.message;
  }
});
$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  route();
});
window.addEventListener("hashchange", route);
route();
