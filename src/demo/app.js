// The octet web demo: one tab = one device of a person. The client (./octet-client.js, built
// from clients/js) does the reconnect/resync/dedupe loop; this page only shows what it hands
// over. Plain browser JavaScript, no framework, nothing loaded from elsewhere.
import { connect, IdbStore } from "./octet-client.js";

const $ = (id) => document.getElementById(id);
const NAME = /^[a-z0-9_-]{1,32}$/;
let client = null;
let device = null;
let call = null; // { id, peer, role: "ringing" | "calling" | "in_call" }
const shown = new Map(); // mid -> <li>: each message is shown once

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

// The devices this browser got for a name, in localStorage. A tab takes one nobody holds (Web
// Locks), so a closed tab's device is reused by the next tab: it resumes from its IndexedDB
// cursor and catches up. Only when every stored device is held does it ask for a new one.
async function claimDevice(name) {
  const key = `octet-demo:devices:${name}`;
  const known = JSON.parse(localStorage.getItem(key) || "[]");
  for (const d of known) {
    if (await hold(d.device)) return d;
  }
  const r = await fetch("/demo/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name }),
  });
  const answer = await r.json();
  if (!answer.result) throw new Error(`${answer.error}: ${answer.message}`);
  const fresh = JSON.parse(localStorage.getItem(key) || "[]");
  fresh.push(answer);
  localStorage.setItem(key, JSON.stringify(fresh));
  await hold(answer.device);
  return answer;
}

// Takes the device's lock for as long as the tab lives; false if another tab has it.
function hold(id) {
  if (!navigator.locks) return Promise.resolve(true); // no Web Locks: share devices
  return new Promise((resolve) => {
    navigator.locks.request(`octet-demo:${id}`, { ifAvailable: true }, (lock) => {
      resolve(lock !== null);
      return lock ? new Promise(() => {}) : undefined;
    });
  });
}

// The page's copy of the conversation, saved before the handler returns: the client moves its
// cursor only after that, so what was shown and the cursor never disagree after a reload.
function savedKey() {
  return `octet-demo:messages:${device.device}`;
}

function remember(m) {
  const list = JSON.parse(localStorage.getItem(savedKey()) || "[]");
  list.push(m);
  localStorage.setItem(savedKey(), JSON.stringify(list.slice(-500)));
}

function showMessage(m) {
  if (shown.has(m.mid)) return;
  const li = document.createElement("li");
  li.className = m.out || m.from === device.address ? "out" : "in";
  li.dataset.seq = String(m.seq);
  li.dataset.mid = String(m.mid);
  const text = document.createElement("div");
  text.className = "text";
  text.textContent = typeof m.body === "object" && m.body ? (m.body.text ?? "") : String(m.body ?? "");
  const meta = document.createElement("div");
  meta.className = "meta";
  const origin = m.origin?.device ? ` from ${m.origin.device}` : "";
  meta.textContent = `${m.from} → ${m.to} · seq ${m.seq}${origin}`;
  li.append(text, meta);
  for (const id of [...(m.files ?? []).map((f) => f.id), ...(m.fileIds ?? [])]) {
    const img = document.createElement("img");
    img.alt = "photo";
    li.append(img);
    client.fileUrl(id).then(
      (u) => (img.src = u.url),
      (err) => (img.alt = `photo unavailable: ${err.message}`),
    );
  }
  shown.set(m.mid, li);
  $("messages").append(li);
}

function showCall(text, buttons) {
  $("call").hidden = !text;
  $("call-text").textContent = text;
  $("call").className = call?.role === "ringing" ? "ringing" : "";
  for (const b of ["answer", "reject", "hangup"]) $(b).hidden = !buttons.includes(b);
}

function onCall(f) {
  const peer = f.out ? f.to : f.from;
  switch (f.action) {
    case "ring":
      if (f.out) {
        showCall(`another device of yours is calling ${f.to}`, []);
      } else {
        call = { id: f.call, peer, role: "ringing" };
        showCall(`${f.from} is calling`, ["answer", "reject"]);
      }
      break;
    case "answer":
      if (call?.id === f.call) {
        call.role = "in_call";
        showCall(`in a call with ${peer}`, ["hangup"]);
      } else {
        showCall("", []);
      }
      break;
    case "answered_elsewhere":
      call = null;
      showCall("answered on another device", []);
      break;
    case "rejected_elsewhere":
    case "reject":
    case "hangup":
    case "missed":
      if (!call || call.id === f.call) {
        call = null;
        showCall(`call ${f.action.replace("_", " ")}`, []);
      }
      break;
  }
}

// `seq` is the event being handed over: the client moves its cursor past an event only after
// the event's handlers (this one included) finished, so `position.held` is one behind here.
function refreshMe(event) {
  const seq = Math.max(client.position.held, typeof event?.seq === "number" ? event.seq : 0);
  $("seq").textContent = String(seq);
  $("state").textContent = client.state;
  $("state").className = client.state === "live" ? "live" : "offline";
}

async function join(name) {
  device = await claimDevice(name);
  const store = await IdbStore.open(`octet-demo-${device.device}`);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  client = await connect({ url: `${scheme}://${location.host}/ws`, token: device.token, appid: device.appid, store });
  // The saved copy first, then what arrives (frames come only once the socket opens, after
  // these handlers are on).
  JSON.parse(localStorage.getItem(savedKey()) || "[]").forEach(showMessage);
  client.on("message", (m) => {
    // How many messages the client handed over since the page loaded: after a reopen, only
    // the missed ones (the cursor came back from IndexedDB), which the browser test checks.
    document.body.dataset.handed = String(Number(document.body.dataset.handed ?? 0) + 1);
    if (shown.has(m.mid)) return;
    remember({ ...m });
    showMessage(m);
  });
  client.on("event", refreshMe);
  client.on("state", () => refreshMe());
  client.on("call", onCall);
  client.on("error", (f) => showError(`${f.code}: ${f.message}`));
  client.on("closed", (err) => showError(`stopped: ${err.message}`));
  $("address").textContent = device.address;
  $("device").textContent = `${device.device} (uid ${device.uid})`;
  $("me").hidden = false;
  $("chat").hidden = false;
  $("join").hidden = true;
  document.title = `${name} · ${device.device} · octet demo`;
  refreshMe();
  // For the curious (and the browser test): the tab's client, in the DevTools console.
  window.demoClient = client;
}

$("join").addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = $("name").value.trim();
  showError("");
  try {
    await join(name);
    sessionStorage.setItem("octet-demo:name", name);
  } catch (err) {
    showError(err.message);
  }
});

$("compose").addEventListener("submit", async (e) => {
  e.preventDefault();
  const peer = $("peer").value.trim();
  if (!NAME.test(peer)) return showError("name who to chat with first (lowercase letters, digits, - or _)");
  showError("");
  const text = $("text").value;
  const file = $("photo").files[0];
  try {
    const files = [];
    if (file) {
      $("upload").hidden = false;
      const att = await client.upload(file, {
        name: file.name,
        onProgress: (sent, total) => ($("upload").textContent = `uploading ${Math.round((100 * sent) / total)}%`),
      });
      files.push(att.id);
      $("upload").hidden = true;
      $("photo").value = "";
    }
    $("text").value = "";
    await client.send(`${peer}@demo`, { text }, { files });
  } catch (err) {
    $("upload").hidden = true;
    showError(`${err.code ?? "error"}: ${err.message}`);
  }
});

$("call-button").addEventListener("click", () => {
  const peer = $("peer").value.trim();
  if (!NAME.test(peer)) return showError("name who to call first");
  try {
    call = { id: client.ring(`${peer}@demo`), peer: `${peer}@demo`, role: "calling" };
    showCall(`calling ${peer}@demo…`, ["hangup"]);
  } catch (err) {
    showError(err.message);
  }
});
$("answer").addEventListener("click", () => {
  client.answer(call.id);
  call.role = "in_call";
  showCall(`in a call with ${call.peer}`, ["hangup"]);
});
$("reject").addEventListener("click", () => {
  client.reject(call.id);
  call = null;
  showCall("", []);
});
$("hangup").addEventListener("click", () => {
  client.hangup(call.id);
  call = null;
  showCall("", []);
});

// A reload of this tab joins again under the same name (and, being free, the same device).
const again = sessionStorage.getItem("octet-demo:name");
if (again) {
  $("name").value = again;
  join(again).catch((err) => showError(err.message));
}
document.body.dataset.ready = "true"; // the handlers are on (module scripts run after parsing)
