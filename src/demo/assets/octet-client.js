// src/close.ts
function closeMeaning(code, reason) {
  switch (code) {
    case 1e3:
      return { action: "backoff" };
    case 1001:
      return { action: "backoff" };
    case 1002:
      return { action: "final", reason: "protocol_error" };
    case 1003:
      return { action: "backoff" };
    case 1007:
      return { action: "final", reason: "protocol_error" };
    case 1009:
      return { action: "backoff" };
    case 1013:
      return { action: "backoff" };
    case 4001:
      return { action: "final", reason: "auth_failed" };
    case 4002:
      return { action: "now" };
    case 4003:
      return { action: "final", reason: "replaced" };
    case 4004:
      if (reason.startsWith("linked to another person")) return { action: "now" };
      return { action: "final", reason: "revoked" };
    case 4005:
      return { action: "backoff" };
    case 4008:
      return { action: "now" };
    case 4010:
      return { action: "final", reason: "disabled" };
    default:
      return { action: "backoff" };
  }
}
function backoffDelay(attempt, baseMs, capMs, random = Math.random) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}
var OctetError = class extends Error {
  /** The stable code from proto/errors.md, or a client code (`frame_too_large`, `queue_full`). */
  code;
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = "OctetError";
    this.code = code;
  }
};
var ClosedError = class extends Error {
  /** Why the client stopped. */
  reason;
  /** The close code, when the broker closed. */
  code;
  constructor(reason, code, message) {
    super(message);
    this.name = "ClosedError";
    this.reason = reason;
    this.code = code;
  }
};

// src/emitter.ts
var Emitter = class {
  handlers = /* @__PURE__ */ new Map();
  /** Adds a handler; the returned function removes it again. */
  on(name, handler) {
    let set = this.handlers.get(name);
    if (!set) {
      set = /* @__PURE__ */ new Set();
      this.handlers.set(name, set);
    }
    set.add(handler);
    return () => this.off(name, handler);
  }
  /** Removes a handler added with `on`. */
  off(name, handler) {
    this.handlers.get(name)?.delete(handler);
  }
  /** Resolves with the next value of an event. */
  once(name) {
    return new Promise((resolve) => {
      const off = this.on(name, (value) => {
        off();
        resolve(value);
      });
    });
  }
  /** Calls every handler in turn, awaiting each; a handler's error is reported, not thrown. */
  async emitAwait(name, value) {
    const set = this.handlers.get(name);
    if (!set) return;
    for (const handler of [...set]) {
      try {
        await handler(value);
      } catch (err) {
        this.handlerFailed(name, err);
      }
    }
  }
  /** Calls every handler without waiting for promises (for live, unlogged frames). */
  emit(name, value) {
    void this.emitAwait(name, value);
  }
  /** What to do with a handler that threw; the client logs to the console. */
  handlerFailed(name, err) {
    console.error(`octet-client: a "${String(name)}" handler threw`, err);
  }
};

// src/socket.ts
var cached;
async function defaultWebSocket() {
  if (cached) return cached;
  const global = globalThis.WebSocket;
  if (global) {
    cached = global;
    return global;
  }
  const name = "ws";
  try {
    const mod = await import(name);
    const ctor = mod.WebSocket ?? mod.default;
    if (!ctor) throw new Error("the `ws` module has no WebSocket export");
    cached = ctor;
    return ctor;
  } catch (err) {
    throw new Error(
      `octet-client: no global WebSocket and the \`ws\` package could not be loaded (${String(err)}); install \`ws\` or pass \`WebSocket\` in the connect options`
    );
  }
}
function messageText(data) {
  if (typeof data === "string") return data;
  if (data instanceof ArrayBuffer) return new TextDecoder().decode(data);
  if (ArrayBuffer.isView(data)) {
    return new TextDecoder().decode(data);
  }
  return null;
}
var OPEN = 1;
function newId() {
  const c = globalThis.crypto;
  if (typeof c.randomUUID === "function") return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] ?? 0) & 15 | 64;
  b[8] = (b[8] ?? 0) & 63 | 128;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// src/connection.ts
function loginFrame(token, appid, cursor, replayAll) {
  const login = { op: "login", token, appid };
  if (cursor.epoch !== null) {
    login.since = cursor.held;
    login.epoch = cursor.epoch;
  } else if (replayAll) {
    login.since = 0;
  }
  return login;
}
var Link = class {
  ws = null;
  /** Writes a frame when a socket is open; offline, the frame is dropped (callers resend): false. */
  write(text) {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) return false;
    ws.send(text);
    return true;
  }
  /** Closes the current socket, if any. */
  close(code, reason) {
    this.ws?.close(code, reason);
  }
  /** Forgets the socket after its close. */
  drop() {
    this.ws = null;
  }
  /** One connection, from the upgrade to its close. */
  run(WS, hooks) {
    return new Promise((done2) => {
      let ws;
      try {
        ws = new WS(hooks.url());
      } catch (err) {
        done2({ code: 1006, reason: String(err) });
        return;
      }
      this.ws = ws;
      const timeout = hooks.timeoutMs;
      let lastFrameAt = Date.now();
      const watch = setInterval(
        () => {
          const waiting = hooks.waiting();
          if (!waiting || Date.now() - lastFrameAt <= timeout) return;
          if (this.ws === ws) this.ws = null;
          ws.onopen = ws.onmessage = ws.onclose = null;
          try {
            ws.close(4e3, "no answer");
          } catch {
          }
          resolve({ code: 1006, reason: `no frame from the broker for ${timeout} ms` });
        },
        Math.max(50, Math.min(1e3, timeout / 4))
      );
      const resolve = (close) => {
        clearInterval(watch);
        done2(close);
      };
      ws.onopen = () => {
        lastFrameAt = Date.now();
        ws.send(JSON.stringify(hooks.login()));
      };
      ws.onmessage = (event) => {
        if (this.ws !== ws) return;
        lastFrameAt = Date.now();
        const text = messageText(event.data);
        if (text === null) return;
        let frame;
        try {
          frame = JSON.parse(text);
        } catch {
          return;
        }
        hooks.onFrame(frame);
      };
      ws.onerror = () => {
      };
      ws.onclose = (event) => {
        if (this.ws === ws) this.ws = null;
        resolve({ code: event.code, reason: event.reason ?? "" });
      };
    });
  }
};

// src/frames.ts
function isLoggedEvent(frame) {
  switch (frame.op) {
    case "welcome":
    case "synced":
    case "sent":
      return false;
    default:
      return typeof frame.seq === "number";
  }
}

// src/log.ts
var EventLog = class {
  constructor(hooks) {
    this.hooks = hooks;
  }
  hooks;
  /** The log's epoch and the highest `seq` handed to the app without a gap. */
  cursor = { epoch: null, held: 0 };
  seen = /* @__PURE__ */ new Set();
  buffer = /* @__PURE__ */ new Map();
  draining = Promise.resolve();
  refilling = false;
  lastAcked = 0;
  ackTimer = null;
  /** Takes the cursor and the seen keys from the store's snapshot. */
  restore(snapshot) {
    this.cursor = snapshot.cursor;
    this.seen = new Set(snapshot.seen);
  }
  /** Resolves once every event received so far was handed to the app. */
  idle() {
    return this.draining;
  }
  /**
   * A `welcome`. When it resumes the log, `null`: the catch-up follows. Otherwise where the
   * refill must start: nothing is replayed, and live events wait in the buffer until the
   * refill is in, so the app still sees the log in `seq` order.
   */
  welcome(frame) {
    const previous = { ...this.cursor };
    const sameEpoch = previous.epoch === frame.epoch;
    this.lastAcked = 0;
    if (frame.recovered && (sameEpoch || previous.epoch === null)) {
      this.refilling = false;
      if (previous.epoch === null) {
        this.cursor = { epoch: frame.epoch, held: this.hooks.replayAll ? 0 : frame.seq };
        void this.hooks.store.saveCursor(this.cursor);
      }
      return null;
    }
    const reason = previous.epoch === null ? "pruned" : !sameEpoch ? "epoch_changed" : previous.held > frame.seq ? "rewound" : "pruned";
    this.refilling = true;
    return { previous, reason, seq: frame.seq };
  }
  /**
   * The refill's events (oldest first) are in: the cursor moves to just below them in `epoch`,
   * `announce` tells the app (the `resync` event), then they are handed over with the live
   * events that waited.
   */
  async refilled(start, epoch, events, announce) {
    const lowest = events[0]?.seq ?? start.seq + 1;
    this.cursor = { epoch, held: lowest - 1 };
    await this.hooks.store.saveCursor(this.cursor);
    await announce();
    for (const event of events) if (!this.buffer.has(event.seq)) this.buffer.set(event.seq, event);
    this.refilling = false;
    this.drain();
  }
  /** A log event from the broker (live, catch-up, or made from a `sent`). */
  accept(event) {
    if (event.seq <= this.cursor.held || this.buffer.has(event.seq)) return;
    this.buffer.set(event.seq, event);
    this.drain();
  }
  /** The connection closed: the catch-up after the next login resends everything past `held`. */
  disconnected() {
    this.buffer.clear();
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
  }
  /** Acks `held` now, unless it was acked already on this connection. */
  sendAck() {
    if (!this.hooks.isLive() || this.cursor.held <= this.lastAcked) return;
    this.lastAcked = this.cursor.held;
    this.hooks.write({ op: "ack", seq: this.cursor.held });
  }
  drain() {
    this.draining = this.draining.then(() => this.drainNow());
  }
  async drainNow() {
    while (!this.refilling) {
      const next = this.buffer.get(this.cursor.held + 1);
      if (next === void 0) return;
      this.buffer.delete(next.seq);
      const keys = [];
      let fresh = true;
      if (next.op === "message") {
        const key = `m:${next.mid}`;
        fresh = !this.seen.has(key);
        keys.push(key);
        const sender = this.hooks.sender;
        let id = sender.idOfMid(next.mid);
        if (id === void 0 && next.out && next.origin?.uid === this.hooks.uid()) {
          id = sender.claimReplay(next);
        }
        if (id !== void 0) next.id = id;
      }
      if (fresh) await this.hooks.hand(next);
      for (const key of keys) this.seen.add(key);
      this.cursor = { epoch: this.cursor.epoch, held: next.seq };
      if (keys.length > 0) await this.hooks.store.addSeen(keys);
      await this.hooks.store.saveCursor(this.cursor);
      this.scheduleAck();
    }
  }
  scheduleAck() {
    if (this.ackTimer || !this.hooks.isLive()) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = null;
      this.sendAck();
    }, this.hooks.ackDelayMs);
  }
};

// src/profiles.ts
var ProfileCache = class {
  constructor(hooks) {
    this.hooks = hooks;
  }
  hooks;
  profiles = /* @__PURE__ */ new Map();
  /** The version last asked for per address, so one `pv` makes one request. */
  asked = /* @__PURE__ */ new Map();
  /** The cached profile of a person, by primary address. */
  of(address) {
    return this.profiles.get(address);
  }
  /** Caches a `get` answer or a `profile` event. */
  set(profile) {
    this.profiles.set(profile.address, profile);
  }
  /** A message handed to the app: its sender's profile is fetched, once, if newer than cached. */
  seen(m) {
    if (m.out || !this.hooks.refresh) return;
    const version = m.pv ?? 0;
    const cached2 = this.profiles.get(m.from);
    if (cached2 && cached2.version >= version) return;
    if ((this.asked.get(m.from) ?? -1) >= version) return;
    this.asked.set(m.from, version);
    this.hooks.get(m.from).then(
      (answer) => this.hooks.fetched(answer),
      () => this.asked.delete(m.from)
      // asked again on the sender's next message
    );
  }
};

// src/sender.ts
var MAX_FRAME_BYTES = 65536;
var MID_MEMORY = 4096;
var Sender = class {
  constructor(deps) {
    this.deps = deps;
  }
  deps;
  queue = [];
  waiters = /* @__PURE__ */ new Map();
  inflight = /* @__PURE__ */ new Set();
  mids = /* @__PURE__ */ new Map();
  /** The pause between sends after `rate_limited`, in ms; shrinks on every `sent`. */
  interval = 0;
  slowedAt = 0;
  timer = null;
  /** Takes over the sends a previous client left in the store. */
  restore(pending) {
    this.queue = [...pending];
  }
  /** How many sends are on the wire without an answer. */
  inFlight() {
    return this.inflight.size;
  }
  /** The ids of unanswered sends, oldest first. */
  pendingIds() {
    return this.queue.map((p) => p.id);
  }
  /** The client id of one of this client's sends, by its broker mid. */
  idOfMid(mid) {
    return this.mids.get(mid);
  }
  /**
   * The client id of a pending send that a catch-up replays before its retry is answered: this
   * device's own `out` message whose body and files are those of a pending send.
   */
  claimReplay(message) {
    const text = JSON.stringify(message.body);
    const files = (message.files ?? []).map((f) => f.id).join(",");
    let same = this.queue.filter((p) => (p.bodyText ?? "null") === text && p.files.join(",") === files);
    if (same.length > 1) same = same.filter((p) => p.to === message.to);
    const pending = same.length === 1 ? same[0] : void 0;
    if (pending) this.mids.set(message.mid, pending.id);
    return pending?.id;
  }
  async send(to, body, options) {
    const id = options.id ?? newId();
    const files = options.files ?? [];
    const bodyText = body === void 0 ? null : JSON.stringify(body);
    const pending = { id, to, bodyText, files, createdAt: Date.now() };
    const size = new TextEncoder().encode(frameText(pending)).length;
    if (size > MAX_FRAME_BYTES) {
      throw new OctetError(
        "frame_too_large",
        `the send frame would be ${size} bytes; the broker's limit is ${MAX_FRAME_BYTES}`
      );
    }
    if (this.queue.length >= this.deps.maxQueue) {
      throw new OctetError(
        "queue_full",
        `${this.queue.length} sends wait for the broker already; wait for some to be sent`
      );
    }
    if (this.queue.some((p) => p.id === id)) {
      throw new OctetError("duplicate_id", `client id ${id} is already queued`);
    }
    const answered = new Promise((resolve, reject) => {
      this.waiters.set(id, { resolve, reject });
    });
    await this.deps.store.putPending(pending);
    this.queue.push(pending);
    this.pump();
    return answered;
  }
  /** Writes queued sends while the window has room and the pace allows. */
  pump() {
    if (!this.deps.isLive() || this.timer) return;
    for (const pending of this.queue) {
      if (this.inflight.size >= this.deps.maxInFlight) return;
      if (this.inflight.has(pending.id)) continue;
      this.inflight.add(pending.id);
      this.deps.write(frameText(pending));
      if (this.interval > 0) {
        this.later(this.interval);
        return;
      }
    }
  }
  later(ms) {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.pump();
    }, ms);
  }
  onSent(frame) {
    const index = this.queue.findIndex((p) => p.id === frame.id);
    this.inflight.delete(frame.id);
    if (index < 0) return;
    const [pending] = this.queue.splice(index, 1);
    if (!pending) return;
    this.interval = this.interval >= 20 ? Math.floor(this.interval * 0.9) : 0;
    this.mids.set(frame.mid, frame.id);
    if (this.mids.size > MID_MEMORY) {
      const oldest = this.mids.keys().next().value;
      if (oldest !== void 0) this.mids.delete(oldest);
    }
    void this.deps.store.deletePending(frame.id);
    const message = {
      op: "message",
      mid: frame.mid,
      seq: frame.seq,
      from: this.deps.self(),
      to: pending.to,
      ts: frame.ts,
      out: true,
      body: pending.bodyText === null ? null : JSON.parse(pending.bodyText),
      id: frame.id,
      ...pending.files.length > 0 ? { fileIds: pending.files } : {}
    };
    this.deps.onSent(frame, message);
    const waiter = this.waiters.get(frame.id);
    this.waiters.delete(frame.id);
    waiter?.resolve(frame);
    this.pump();
  }
  /** Handles an `error` that names a send; `false` when the id is not a queued send. */
  onError(frame) {
    const index = this.queue.findIndex((p) => p.id === frame.id);
    if (index < 0 || frame.id === void 0) return false;
    this.inflight.delete(frame.id);
    if (frame.code === "rate_limited" || frame.code === "internal") {
      const now = Date.now();
      if (now - this.slowedAt >= this.interval) {
        this.interval = Math.min(5e3, Math.max(100, this.interval * 2));
        this.slowedAt = now;
        this.deps.onThrottle(this.interval);
      }
      this.later(this.interval);
      return true;
    }
    this.queue.splice(index, 1);
    void this.deps.store.deletePending(frame.id);
    const waiter = this.waiters.get(frame.id);
    this.waiters.delete(frame.id);
    waiter?.reject(new OctetError(frame.code, frame.message));
    this.pump();
    return true;
  }
  /** The connection closed: whatever was on the wire is sent again on the next one. */
  disconnected() {
    this.inflight.clear();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
  /** The client stopped for good: promises reject; the sends stay in the store. */
  stopped(err) {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const waiter of this.waiters.values()) waiter.reject(err);
    this.waiters.clear();
  }
};
function frameText(p) {
  const head = `{"op":"send","id":${JSON.stringify(p.id)},"to":${JSON.stringify(p.to)}`;
  const files = p.files.length > 0 ? `,"files":${JSON.stringify(p.files)}` : "";
  const body = p.bodyText === null ? "" : `,"body":${p.bodyText}`;
  return `${head}${files}${body}}`;
}

// src/store.ts
var DEFAULT_SEEN_LIMIT = 1e4;
var MemoryStore = class {
  /** @param seenLimit how many dedupe keys to keep (the oldest are forgotten first). */
  constructor(seenLimit = DEFAULT_SEEN_LIMIT) {
    this.seenLimit = seenLimit;
  }
  seenLimit;
  cursor = { epoch: null, held: 0 };
  pending = /* @__PURE__ */ new Map();
  seen = /* @__PURE__ */ new Set();
  async load() {
    return {
      cursor: { ...this.cursor },
      pending: [...this.pending.values()].map((p) => ({ ...p, files: [...p.files] })),
      seen: [...this.seen]
    };
  }
  async saveCursor(cursor) {
    this.cursor = { ...cursor };
  }
  async putPending(send) {
    this.pending.set(send.id, { ...send, files: [...send.files] });
  }
  async deletePending(id) {
    this.pending.delete(id);
  }
  async addSeen(keys) {
    for (const key of keys) {
      this.seen.delete(key);
      this.seen.add(key);
    }
    while (this.seen.size > this.seenLimit) {
      const oldest = this.seen.values().next().value;
      if (oldest === void 0) break;
      this.seen.delete(oldest);
    }
  }
};

// src/refill.ts
async function refill(start, limit, page) {
  const floor = start.reason === "pruned" ? start.previous.held : 0;
  const events = [];
  let before = start.seq + 1;
  let reachedStart = false;
  while (events.length < limit) {
    const answer = await page(before, Math.min(500, limit - events.length));
    events.unshift(...answer.events.filter((e) => e.seq > floor));
    const first = answer.events[0];
    if (!answer.more || first === void 0) {
      reachedStart = true;
      break;
    }
    if (first.seq <= floor + 1) break;
    before = first.seq;
  }
  const lowest = events[0]?.seq ?? start.seq + 1;
  const complete = lowest <= floor + 1;
  const info = { reason: start.reason, previous: start.previous, seq: start.seq, complete };
  if (!complete && reachedStart) info.lost = { from: floor + 1, to: lowest - 1 };
  return { events, info };
}

// src/requests.ts
function lost() {
  return new OctetError("connection_lost", "the connection closed before the answer");
}
async function patiently(ask, firstPauseMs = 250) {
  for (let pause = firstPauseMs; ; pause = Math.min(pause * 2, 5e3)) {
    try {
      return await ask();
    } catch (err) {
      if (!(err instanceof OctetError && err.code === "rate_limited")) throw err;
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }
}
var Requests = class {
  /** In the order asked. */
  answers = [];
  fileUrls = /* @__PURE__ */ new Map();
  /**
   * Writes a request and waits for its answer, written with a new `id` and matched by it (so a
   * refusal of another frame, or another request's answer, is never taken for it).
   */
  ask(kind, write) {
    const id = newId();
    return new Promise((resolve, reject) => {
      const waiter = { kind, id, resolve, reject };
      this.answers.push(waiter);
      if (write(id)) return;
      this.answers.splice(this.answers.indexOf(waiter), 1);
      reject(lost());
    });
  }
  /** Writes a `file_url` and waits for the answer with that id. */
  askFileUrl(id, write) {
    return new Promise((resolve, reject) => {
      if (!write()) return reject(lost());
      this.fileUrls.set(id, { resolve, reject });
    });
  }
  /** An answer (a `profile` without `seq`, …): the request with its id. */
  onAnswer(frame) {
    const index = this.answers.findIndex((w) => w.id === frame.id && w.kind === frame.op);
    if (index >= 0) this.answers.splice(index, 1)[0]?.resolve(frame);
  }
  onFileUrl(frame) {
    const waiter = this.fileUrls.get(frame.id);
    this.fileUrls.delete(frame.id);
    waiter?.resolve(frame);
  }
  /** An `error` that answers a waiting request; `false` when none can be its cause. */
  onError(frame) {
    const error = new OctetError(frame.code, frame.message);
    if (frame.id !== void 0) {
      const index = this.answers.findIndex((w) => w.id === frame.id);
      if (index >= 0) {
        this.answers.splice(index, 1)[0]?.reject(error);
        return true;
      }
      const waiter = this.fileUrls.get(frame.id);
      if (!waiter) return false;
      this.fileUrls.delete(frame.id);
      waiter.reject(error);
      return true;
    }
    return false;
  }
  /** How many requests wait for their answers. */
  waiting() {
    return this.answers.length + this.fileUrls.size;
  }
  /** The connection closed or the client stopped: every waiting request fails with `err`. */
  failAll(err) {
    for (const waiter of this.answers.splice(0)) waiter.reject(err);
    for (const waiter of this.fileUrls.values()) waiter.reject(err);
    this.fileUrls.clear();
  }
};

// src/upload.ts
var CHUNK = 64 * 1024;
async function upload(url, token, appid, data, options) {
  const blob = data instanceof Blob ? data : new Blob([data]);
  const name = options.name ?? data.name ?? "file";
  const target = new URL(url);
  target.searchParams.set("name", name);
  const headers = { Authorization: `Bearer ${token}`, "Octet-Appid": appid };
  const XHR = globalThis.XMLHttpRequest;
  const text = XHR ? await viaXhr(XHR, target.toString(), headers, blob, options) : await viaFetch(target.toString(), headers, blob, options);
  let answer;
  try {
    answer = JSON.parse(text);
  } catch {
    throw new OctetError("bad_answer", `the broker answered the upload with: ${text.slice(0, 200)}`);
  }
  if (!answer.result || !answer.file) {
    throw new OctetError(answer.error ?? "upload_failed", answer.message ?? "the upload was refused");
  }
  return answer.file;
}
async function viaFetch(url, headers, blob, options) {
  const total = blob.size;
  let sent = 0;
  const reader = blob.stream().getReader();
  const body = new ReadableStream({
    async pull(controller) {
      const { done: done2, value } = await reader.read();
      if (done2) {
        controller.close();
        return;
      }
      for (let at = 0; at < value.length; at += CHUNK) {
        const chunk = value.subarray(at, at + CHUNK);
        controller.enqueue(chunk);
        sent += chunk.length;
        options.onProgress?.(sent, total);
      }
    }
  });
  const init = {
    method: "POST",
    headers: { ...headers, "Content-Length": String(total) },
    body,
    duplex: "half"
  };
  if (options.signal) init.signal = options.signal;
  const response = await fetch(url, init);
  return response.text();
}
function viaXhr(XHR, url, headers, blob, options) {
  return new Promise((resolve, reject) => {
    const xhr = new XHR();
    xhr.open("POST", url);
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => options.onProgress?.(e.loaded, blob.size);
    xhr.onload = () => resolve(xhr.responseText);
    xhr.onerror = () => reject(new OctetError("network", "the upload failed on the network"));
    xhr.onabort = () => reject(new OctetError("aborted", "the upload was aborted"));
    options.signal?.addEventListener("abort", () => xhr.abort());
    xhr.send(blob);
  });
}

// src/client.ts
async function connect(options) {
  const client = new Client(options);
  await client.start();
  return client;
}
var Client = class extends Emitter {
  /** Use {@link connect}. */
  constructor(options) {
    super();
    this.options = options;
    this.store = options.store ?? new MemoryStore();
    this.sender = new Sender({
      store: this.store,
      maxQueue: options.maxQueue ?? 1e3,
      maxInFlight: options.maxInFlight ?? 32,
      write: (text) => this.link.write(text),
      isLive: () => this.state === "live",
      self: () => this.welcome?.primary.address ?? "",
      onSent: (frame, message) => this.onOwnSent(frame, message),
      onThrottle: (pauseMs) => this.emit("throttled", { pauseMs })
    });
    this.profiles = new ProfileCache({
      get: (address) => this.getProfile(address),
      fetched: (answer) => this.emit("peer_profile", answer),
      refresh: options.profileCache !== false
    });
    this.log = new EventLog({
      store: this.store,
      sender: this.sender,
      uid: () => this.welcome?.uid,
      isLive: () => this.state === "live",
      write: (frame) => this.write(frame),
      ackDelayMs: options.ackDelayMs ?? 250,
      replayAll: options.replayAll ?? true,
      hand: (event) => this.hand(event)
    });
  }
  options;
  /** The connection state. */
  state = "connecting";
  /** The last `welcome` (this device's uid and address, the person's primary). */
  welcome = null;
  store;
  sender;
  log;
  link = new Link();
  stopped = null;
  attempt = 0;
  reads = /* @__PURE__ */ new Map();
  presence = /* @__PURE__ */ new Set();
  profiles;
  requests = new Requests();
  liveWaiters = [];
  pendingResync = null;
  wakeReconnect = null;
  /** Loads the store and starts the connect loop. */
  async start() {
    const snapshot = await this.store.load();
    this.log.restore(snapshot);
    this.sender.restore(snapshot.pending);
    void this.loop();
  }
  /** The cursor: the log's epoch and the highest `seq` handed to the app without a gap. */
  get position() {
    return { ...this.log.cursor };
  }
  /**
   * Sends a message; resolves with its `sent` once the broker stored it. The client id is made
   * and stored before the frame leaves, and the frame is retried with that id across reconnects,
   * so it is stored once. Rejects on a refusal (`unknown_recipient`, `duplicate_id`, …), a full
   * queue (`queue_full`), a frame over 64 KiB (`frame_too_large`) or a final close.
   */
  send(to, body, options = {}) {
    if (this.stopped) return Promise.reject(this.stopped);
    return this.sender.send(to, body, options);
  }
  /** The sends not answered yet, oldest first (also those restored from the store). */
  pendingSends() {
    return this.sender.pendingIds();
  }
  /** Marks the conversation with `peer` read up to the message `upto` (a `mid`). */
  read(peer, upto) {
    if ((this.reads.get(peer) ?? 0) >= upto) return;
    this.reads.set(peer, upto);
    if (this.state === "live") this.write({ op: "read", peer, upto });
  }
  /** Pages the log backwards (newest page first), each page oldest first. Survives reconnects. */
  async *history(options = {}) {
    let before = options.before;
    for (; ; ) {
      const page = await this.request(
        "history",
        (id) => this.write({ op: "history", before, limit: options.limit, id })
      );
      if (page.events.length > 0) yield page.events;
      const first = page.events[0];
      if (!page.more || first === void 0) return;
      before = first.seq;
    }
  }
  /** Gets a person's profile (any of its addresses), and caches it under its primary address. */
  async getProfile(address) {
    const answer = {
      ...await this.request(
        "profile",
        (id) => this.write({ op: "profile", get: address, id })
      )
    };
    delete answer.id;
    this.profiles.set(answer);
    return answer;
  }
  /** The cached profile of a person (by primary address), kept fresh from messages' `pv`. */
  profileOf(address) {
    return this.profiles.of(address);
  }
  /** This person's devices now, primary first (`online`: connected right now). */
  async devices() {
    const answer = await this.request("devices", (id) => this.write({ op: "devices", id }));
    return answer.devices;
  }
  /**
   * Revokes every token of a device of this person (`uid` from {@link devices}; this device's
   * own uid logs it out, and the client then closes for good). Rejects with `forbidden` unless
   * the broker runs with `--device-self-revoke`, `no_such_user` for a uid not of this person.
   */
  async revoke(uid) {
    const answer = {
      ...await this.request("revoke", (id) => this.write({ op: "revoke", uid, id }))
    };
    delete answer.id;
    return answer;
  }
  /** Changes this person's profile; the change comes back as a `profile` event. */
  async setProfile(patch) {
    await this.whenLive();
    this.write({ op: "profile", set: patch });
  }
  /** Signed download URLs of a file (for an `<img src>`), absolute. */
  async fileUrl(id) {
    await this.whenLive();
    const frame = await this.requests.askFileUrl(id, () => this.write({ op: "file_url", id }));
    return {
      ...frame,
      url: this.httpUrl(frame.url),
      ...frame.thumb_url ? { thumb_url: this.httpUrl(frame.thumb_url) } : {}
    };
  }
  /** Uploads a file with `POST /files`, reporting progress; the answer's `file` is the attachment. */
  upload(data, options = {}) {
    return upload(this.httpUrl("/files"), this.options.token, this.options.appid, data, options);
  }
  /** Makes a path the broker answered (`/files/f_…`) absolute. */
  httpUrl(path) {
    const base = new URL(this.url());
    base.protocol = base.protocol === "wss:" ? "https:" : "http:";
    return new URL(path, base).toString();
  }
  /** Rings a person; resolves with the call id (made here unless given). */
  ring(to, options = {}) {
    const call = options.call ?? newId();
    this.liveOnly({ op: "call", call, action: "ring", to, ...withData(options.data) });
    return call;
  }
  /** Answers a ringing call. */
  answer(call, data) {
    this.liveOnly({ op: "call", call, action: "answer", ...withData(data) });
  }
  /** Rejects a ringing call. */
  reject(call, data) {
    this.liveOnly({ op: "call", call, action: "reject", ...withData(data) });
  }
  /** Ends or cancels a call. */
  hangup(call) {
    this.liveOnly({ op: "call", call, action: "hangup" });
  }
  /** Passes `data` (SDP, ICE) to the other device in an answered call. */
  signal(call, data) {
    this.liveOnly({ op: "call", call, action: "signal", data });
  }
  /** Tells `to` this device started or stopped typing; dropped while offline (it is transient). */
  typing(to, state) {
    if (this.state === "live") this.write({ op: "typing", to, state });
  }
  /** Subscribes to persons' presence; kept across reconnects. */
  subscribePresence(addresses) {
    for (const a of addresses) this.presence.add(a);
    if (this.state === "live" && addresses.length > 0) {
      this.write({ op: "presence", subscribe: addresses });
    }
  }
  /** Ends presence subscriptions. */
  unsubscribePresence(addresses) {
    for (const a of addresses) this.presence.delete(a);
    if (this.state === "live" && addresses.length > 0) {
      this.write({ op: "presence", unsubscribe: addresses });
    }
  }
  /** Resolves once the client is live (after `synced`); rejects if it stops for good. */
  whenLive() {
    if (this.stopped) return Promise.reject(this.stopped);
    if (this.state === "live") return Promise.resolve();
    return new Promise((resolve, reject) => this.liveWaiters.push({ resolve, reject }));
  }
  /** Resolves once every log event received so far was handed to the app. */
  idle() {
    return this.log.idle();
  }
  /** Closes for good. Unanswered sends stay in the store for the next client. */
  close() {
    this.stop(new ClosedError("closed_by_app", void 0, "closed by the app"));
    this.link.close(1e3, "closed by the app");
  }
  // ---- the connect loop ----
  url() {
    const url = this.options.url;
    return typeof url === "function" ? url() : url;
  }
  async loop() {
    let WS;
    try {
      WS = this.options.WebSocket ?? await defaultWebSocket();
    } catch (err) {
      this.stop(new ClosedError("protocol_error", void 0, String(err)));
      return;
    }
    while (!this.stopped) {
      this.setState("connecting");
      const { code, reason } = await this.link.run(WS, {
        url: () => this.url(),
        login: () => {
          const { token, appid, replayAll } = this.options;
          return loginFrame(token, appid, this.log.cursor, replayAll ?? true);
        },
        onFrame: (frame) => this.onFrame(frame),
        waiting: () => this.state !== "live" || this.sender.inFlight() > 0 || this.requests.waiting() > 0,
        timeoutMs: this.options.answerTimeoutMs ?? 2e4
      });
      this.onDisconnect();
      if (this.stopped) break;
      const meaning = closeMeaning(code, reason);
      if (meaning.action === "final") {
        const why = meaning.reason ?? "protocol_error";
        this.stop(new ClosedError(why, code, `closed by the broker with ${code}: ${reason}`));
        break;
      }
      const { backoffBaseMs = 500, backoffMaxMs = 3e4 } = this.options;
      const now = meaning.action === "now" && this.attempt === 0;
      const delay = now ? 0 : backoffDelay(this.attempt, backoffBaseMs, backoffMaxMs);
      this.attempt += 1;
      this.setState("waiting");
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.wakeReconnect = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wakeReconnect = null;
    }
    this.setState("closed");
  }
  onDisconnect() {
    this.link.drop();
    this.log.disconnected();
    this.sender.disconnected();
    this.requests.failAll(lost());
  }
  stop(err) {
    if (this.stopped) return;
    this.stopped = err;
    this.sender.stopped(err);
    for (const waiter of this.liveWaiters.splice(0)) waiter.reject(err);
    this.requests.failAll(err);
    this.wakeReconnect?.();
    this.setState("closed");
    this.emit("closed", err);
  }
  setState(state) {
    if (this.state === state || this.state === "closed") return;
    this.state = state;
    this.emit("state", state);
  }
  /** Writes a frame if the socket is open (else false: offline frames are dropped). */
  write(frame) {
    return this.link.write(JSON.stringify(frame));
  }
  liveOnly(frame) {
    if (this.state !== "live") {
      throw new OctetError("offline", "calls are live only: wait for the client to be live");
    }
    this.write(frame);
  }
  async request(kind, send) {
    for (; ; ) {
      await this.whenLive();
      try {
        return await patiently(() => this.requests.ask(kind, send));
      } catch (err) {
        if (err instanceof OctetError && err.code === "connection_lost") continue;
        throw err;
      }
    }
  }
  // ---- frames from the broker ----
  onFrame(frame) {
    if (isLoggedEvent(frame)) {
      this.accept(frame);
      return;
    }
    switch (frame.op) {
      case "welcome":
        this.onWelcome(frame);
        break;
      case "synced":
        void this.onSynced(frame);
        break;
      case "sent":
        this.sender.onSent(frame);
        break;
      case "error":
        this.onError(frame);
        break;
      case "history":
      case "profile":
      case "devices":
      case "revoke":
        this.requests.onAnswer(frame);
        break;
      case "file_url":
        this.requests.onFileUrl(frame);
        break;
      case "call":
        this.emit("call", frame);
        break;
      case "typing":
        this.emit("typing", frame);
        break;
      case "presence":
        this.emit("presence", frame);
        break;
    }
  }
  onWelcome(frame) {
    this.welcome = frame;
    this.setState("catching_up");
    this.pendingResync = this.log.welcome(frame);
    this.emit("welcome", frame);
  }
  async onSynced(frame) {
    this.attempt = 0;
    this.setState("live");
    this.emit("synced", frame);
    for (const waiter of this.liveWaiters.splice(0)) waiter.resolve();
    if (this.presence.size > 0) this.write({ op: "presence", subscribe: [...this.presence] });
    for (const [peer, upto] of this.reads) this.write({ op: "read", peer, upto });
    this.sender.pump();
    if (this.pendingResync) {
      const resync = this.pendingResync;
      this.pendingResync = null;
      try {
        await this.refill(resync);
      } catch {
        return;
      }
    }
    await this.log.idle();
    this.log.sendAck();
  }
  /** After `recovered: false`: page history back to the old cursor, then resume in order. */
  async refill(start) {
    const { events, info } = await refill(
      start,
      this.options.refillLimit ?? 1e3,
      async (before, limit) => await patiently(
        () => this.requests.ask("history", (id) => this.write({ op: "history", before, limit, id }))
      )
    );
    const epoch = this.welcome?.epoch ?? start.previous.epoch;
    await this.log.refilled(start, epoch, events, () => this.emitAwait("resync", info));
  }
  onError(frame) {
    if (this.state === "catching_up" && this.pendingResync?.reason === "rewound") {
      if (frame.code === "bad_value" && frame.id === void 0) return;
    }
    if (frame.id !== void 0 && this.sender.onError(frame)) return;
    if (this.requests.onError(frame)) return;
    this.emit("error", frame);
  }
  // ---- the log, in order, once ----
  onOwnSent(frame, message) {
    this.emit("sent", frame);
    if (message) this.accept(message);
  }
  accept(event) {
    if (event.op === "read" && (this.reads.get(event.peer) ?? Infinity) <= event.upto) {
      this.reads.delete(event.peer);
    }
    this.log.accept(event);
  }
  /** Hands a new log event to the app, in order (the log calls it), after the caches saw it. */
  async hand(event) {
    if (event.op === "message") this.profiles.seen(event);
    if (event.op === "profile") this.profiles.set(event);
    await this.emitAwait(event.op, event);
    await this.emitAwait("event", event);
  }
};
function withData(data) {
  return data === void 0 ? {} : { data };
}

// src/idb.ts
var VERSION = 1;
var META = "meta";
var PENDING = "pending";
var SEEN = "seen";
function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error("IndexedDB request failed"));
  });
}
function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error ?? new Error("IndexedDB transaction failed"));
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}
var IdbStore = class _IdbStore {
  constructor(db, seenLimit) {
    this.db = db;
    this.seenLimit = seenLimit;
  }
  db;
  seenLimit;
  order = 0;
  /**
   * Opens (or creates) the database `name`. `options.factory` is the IndexedDB to use (default
   * `globalThis.indexedDB`; tests pass a fake); `options.seenLimit` how many dedupe keys to keep.
   */
  static async open(name, options = {}) {
    const factory = options.factory ?? globalThis.indexedDB;
    if (!factory) throw new Error("octet-client/idb: this environment has no IndexedDB");
    const open = factory.open(name, VERSION);
    open.onupgradeneeded = () => {
      const db2 = open.result;
      db2.createObjectStore(META);
      db2.createObjectStore(PENDING, { keyPath: "id" }).createIndex("order", "order");
      db2.createObjectStore(SEEN, { keyPath: "key" }).createIndex("order", "order");
    };
    const db = await request(open);
    return new _IdbStore(db, options.seenLimit ?? DEFAULT_SEEN_LIMIT);
  }
  /** Closes the database. */
  close() {
    this.db.close();
  }
  async load() {
    const tx = this.db.transaction([META, PENDING, SEEN], "readonly");
    const cursor = await request(tx.objectStore(META).get("cursor"));
    const pending = await request(
      tx.objectStore(PENDING).index("order").getAll()
    );
    const seen = await request(tx.objectStore(SEEN).index("order").getAll());
    await done(tx);
    this.order = Math.max(0, ...pending.map((p) => p.order), ...seen.map((s) => s.order));
    return {
      cursor: cursor ?? { epoch: null, held: 0 },
      pending: pending.map(({ order: _order, ...p }) => p),
      seen: seen.map((s) => s.key)
    };
  }
  async saveCursor(cursor) {
    const tx = this.db.transaction(META, "readwrite");
    tx.objectStore(META).put({ epoch: cursor.epoch, held: cursor.held }, "cursor");
    await done(tx);
  }
  async putPending(send) {
    const tx = this.db.transaction(PENDING, "readwrite");
    const row = { ...send, files: [...send.files], order: ++this.order };
    tx.objectStore(PENDING).put(row);
    await done(tx);
  }
  async deletePending(id) {
    const tx = this.db.transaction(PENDING, "readwrite");
    tx.objectStore(PENDING).delete(id);
    await done(tx);
  }
  async addSeen(keys) {
    if (keys.length === 0) return;
    const tx = this.db.transaction(SEEN, "readwrite");
    const store = tx.objectStore(SEEN);
    for (const key of keys) {
      const row = { key, order: ++this.order };
      store.put(row);
    }
    const count = store.count();
    count.onsuccess = () => {
      let excess = count.result - this.seenLimit;
      if (excess <= 0) return;
      const walk = store.index("order").openCursor();
      walk.onsuccess = () => {
        const c = walk.result;
        if (!c || excess <= 0) return;
        c.delete();
        excess -= 1;
        c.continue();
      };
    };
    await done(tx);
  }
};
export {
  Client,
  ClosedError,
  DEFAULT_SEEN_LIMIT,
  Emitter,
  IdbStore,
  MemoryStore,
  OctetError,
  backoffDelay,
  closeMeaning,
  connect,
  isLoggedEvent
};
