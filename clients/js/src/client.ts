/**
 * The client: one device's connection to the broker, kept alive across closes, with the
 * cursor/dedupe/retry loop of proto/frames.md ("How to write a client") done for the app.
 * @module
 */

import { ClosedError, OctetError, backoffDelay, closeMeaning } from "./close.js";
import { Emitter } from "./emitter.js";
import type {
  ClientFrame,
  DevicesFrame,
  ErrorFrame,
  FileUrlFrame,
  HistoryFrame,
  Json,
  LoggedEvent,
  MessageFrame,
  Profile,
  ProfileAnswerFrame,
  RevokeFrame,
  SentFrame,
  ServerFrame,
  SyncedFrame,
  WelcomeFrame,
} from "./frames.js";
import { isLoggedEvent } from "./frames.js";
import { Sender, type SendOptions } from "./sender.js";
import { OPEN, defaultWebSocket, messageText, newId } from "./socket.js";
import type { WebSocketConstructor, WebSocketLike } from "./socket.js";
import { MemoryStore } from "./store.js";
import type { Cursor, Store } from "./store.js";
import type { AppMessage, ClientEvents, ConnectOptions, ConnectionState, ResyncInfo } from "./types.js";
import { refill, type ResyncStart } from "./refill.js";
import { Requests, type Answer } from "./requests.js";
import { upload, type UploadOptions, type UploadResult } from "./upload.js";

/** Connects a device: resolves once the store is loaded and the first connect has started. */
export async function connect(options: ConnectOptions): Promise<Client> {
  const client = new Client(options);
  await client.start();
  return client;
}

/** One device's connection to the broker. Create it with {@link connect}. */
export class Client extends Emitter<ClientEvents> {
  /** The connection state. */
  state: ConnectionState = "connecting";
  /** The last `welcome` (this device's uid and address, the person's primary). */
  welcome: WelcomeFrame | null = null;

  private readonly store: Store;
  private readonly sender: Sender;
  private cursor: Cursor = { epoch: null, held: 0 };
  private seen = new Set<string>();
  private readonly buffer = new Map<number, LoggedEvent>();
  private draining: Promise<void> = Promise.resolve();
  private refilling = false;
  private ws: WebSocketLike | null = null;
  private stopped: ClosedError | null = null;
  private attempt = 0;
  private lastAcked = 0;
  private ackTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly reads = new Map<string, number>();
  private readonly presence = new Set<string>();
  private readonly profiles = new Map<string, ProfileAnswerFrame>();
  private readonly profileAsked = new Map<string, number>();
  private readonly requests = new Requests();
  private liveWaiters: { resolve: () => void; reject: (err: Error) => void }[] = [];
  private pendingResync: ResyncStart | null = null;
  private wakeReconnect: (() => void) | null = null;

  /** Use {@link connect}. */
  constructor(private readonly options: ConnectOptions) {
    super();
    this.store = options.store ?? new MemoryStore();
    this.sender = new Sender({
      store: this.store,
      maxQueue: options.maxQueue ?? 1000,
      maxInFlight: options.maxInFlight ?? 32,
      write: (text) => this.writeText(text),
      isLive: () => this.state === "live",
      self: () => this.welcome?.primary.address ?? "",
      onSent: (frame, message) => this.onOwnSent(frame, message),
      onThrottle: (pauseMs) => this.emit("throttled", { pauseMs }),
    });
  }

  /** Loads the store and starts the connect loop. */
  async start(): Promise<void> {
    const snapshot = await this.store.load();
    this.cursor = snapshot.cursor;
    this.seen = new Set(snapshot.seen);
    this.sender.restore(snapshot.pending);
    void this.loop();
  }

  /** The cursor: the log's epoch and the highest `seq` handed to the app without a gap. */
  get position(): Cursor {
    return { ...this.cursor };
  }

  /**
   * Sends a message; resolves with its `sent` once the broker stored it. The client id is made
   * and stored before the frame leaves, and the frame is retried with that id across reconnects,
   * so it is stored once. Rejects on a refusal (`unknown_recipient`, `duplicate_id`, …), a full
   * queue (`queue_full`), a frame over 64 KiB (`frame_too_large`) or a final close.
   */
  send(to: string, body: Json | undefined, options: SendOptions = {}): Promise<SentFrame> {
    if (this.stopped) return Promise.reject(this.stopped);
    return this.sender.send(to, body, options);
  }

  /** The sends not answered yet, oldest first (also those restored from the store). */
  pendingSends(): string[] {
    return this.sender.pendingIds();
  }

  /** Marks the conversation with `peer` read up to the message `upto` (a `mid`). */
  read(peer: string, upto: number): void {
    if ((this.reads.get(peer) ?? 0) >= upto) return;
    this.reads.set(peer, upto);
    if (this.state === "live") this.write({ op: "read", peer, upto });
  }

  /** Pages the log backwards (newest page first), each page oldest first. Survives reconnects. */
  async *history(options: { before?: number; limit?: number } = {}): AsyncGenerator<LoggedEvent[]> {
    let before = options.before;
    for (;;) {
      const page = (await this.request("history", (id) =>
        this.write({ op: "history", before, limit: options.limit, id }),
      )) as HistoryFrame;
      if (page.events.length > 0) yield page.events;
      const first = page.events[0];
      if (!page.more || first === undefined) return;
      before = first.seq;
    }
  }

  /** Gets a person's profile (any of its addresses), and caches it under its primary address. */
  async getProfile(address: string): Promise<ProfileAnswerFrame> {
    const answer = {
      ...((await this.request("profile", (id) =>
        this.write({ op: "profile", get: address, id }),
      )) as ProfileAnswerFrame),
    };
    delete answer.id; // the request's tag, not part of the profile
    this.profiles.set(answer.address, answer);
    return answer;
  }

  /** The cached profile of a person (by primary address), kept fresh from messages' `pv`. */
  profileOf(address: string): ProfileAnswerFrame | undefined {
    return this.profiles.get(address);
  }

  /** A message's sender whose profile is newer than the cached one is asked for it, once. */
  private refreshProfile(m: MessageFrame): void {
    if (m.out || this.options.profileCache === false) return;
    const cached = this.profiles.get(m.from);
    if (cached && cached.version >= (m.pv ?? 0)) return;
    if ((this.profileAsked.get(m.from) ?? -1) >= (m.pv ?? 0)) return;
    this.profileAsked.set(m.from, m.pv ?? 0);
    this.getProfile(m.from).then(
      (answer) => this.emit("peer_profile", answer),
      () => this.profileAsked.delete(m.from), // asked again on the sender's next message
    );
  }

  /** This person's devices now, primary first (`online`: connected right now). */
  async devices(): Promise<DevicesFrame["devices"]> {
    const answer = (await this.request("devices", () => this.write({ op: "devices" }))) as DevicesFrame;
    return answer.devices;
  }

  /**
   * Revokes every token of a device of this person (`uid` from {@link devices}; this device's
   * own uid logs it out, and the client then closes for good). Rejects with `forbidden` unless
   * the broker runs with `--device-self-revoke`, `no_such_user` for a uid not of this person.
   */
  async revoke(uid: number): Promise<RevokeFrame> {
    return (await this.request("revoke", () => this.write({ op: "revoke", uid }))) as RevokeFrame;
  }

  /** Changes this person's profile; the change comes back as a `profile` event. */
  async setProfile(patch: { [K in keyof Profile]?: Profile[K] | null }): Promise<void> {
    await this.whenLive();
    this.write({ op: "profile", set: patch as { [key: string]: Json } });
  }

  /** Signed download URLs of a file (for an `<img src>`), absolute. */
  async fileUrl(id: string): Promise<FileUrlFrame> {
    await this.whenLive();
    const frame = await this.requests.askFileUrl(id, () => this.write({ op: "file_url", id }));
    return {
      ...frame,
      url: this.httpUrl(frame.url),
      ...(frame.thumb_url ? { thumb_url: this.httpUrl(frame.thumb_url) } : {}),
    };
  }

  /** Uploads a file with `POST /files`, reporting progress; the answer's `file` is the attachment. */
  upload(data: Blob | Uint8Array | ArrayBuffer, options: UploadOptions = {}): Promise<UploadResult> {
    return upload(this.httpUrl("/files"), this.options.token, this.options.appid, data, options);
  }

  /** Makes a path the broker answered (`/files/f_…`) absolute. */
  httpUrl(path: string): string {
    const base = new URL(this.url());
    base.protocol = base.protocol === "wss:" ? "https:" : "http:";
    return new URL(path, base).toString();
  }

  /** Rings a person; resolves with the call id (made here unless given). */
  ring(to: string, options: { data?: Json; call?: string } = {}): string {
    const call = options.call ?? newId();
    this.liveOnly({ op: "call", call, action: "ring", to, ...withData(options.data) });
    return call;
  }

  /** Answers a ringing call. */
  answer(call: string, data?: Json): void {
    this.liveOnly({ op: "call", call, action: "answer", ...withData(data) });
  }

  /** Rejects a ringing call. */
  reject(call: string, data?: Json): void {
    this.liveOnly({ op: "call", call, action: "reject", ...withData(data) });
  }

  /** Ends or cancels a call. */
  hangup(call: string): void {
    this.liveOnly({ op: "call", call, action: "hangup" });
  }

  /** Passes `data` (SDP, ICE) to the other device in an answered call. */
  signal(call: string, data: Json): void {
    this.liveOnly({ op: "call", call, action: "signal", data });
  }

  /** Tells `to` this device started or stopped typing; dropped while offline (it is transient). */
  typing(to: string, state: "start" | "stop"): void {
    if (this.state === "live") this.write({ op: "typing", to, state });
  }

  /** Subscribes to persons' presence; kept across reconnects. */
  subscribePresence(addresses: string[]): void {
    for (const a of addresses) this.presence.add(a);
    if (this.state === "live" && addresses.length > 0) {
      this.write({ op: "presence", subscribe: addresses });
    }
  }

  /** Ends presence subscriptions. */
  unsubscribePresence(addresses: string[]): void {
    for (const a of addresses) this.presence.delete(a);
    if (this.state === "live" && addresses.length > 0) {
      this.write({ op: "presence", unsubscribe: addresses });
    }
  }

  /** Resolves once the client is live (after `synced`); rejects if it stops for good. */
  whenLive(): Promise<void> {
    if (this.stopped) return Promise.reject(this.stopped);
    if (this.state === "live") return Promise.resolve();
    return new Promise((resolve, reject) => this.liveWaiters.push({ resolve, reject }));
  }

  /** Resolves once every log event received so far was handed to the app. */
  idle(): Promise<void> {
    return this.draining;
  }

  /** Closes for good. Unanswered sends stay in the store for the next client. */
  close(): void {
    this.stop(new ClosedError("closed_by_app", undefined, "closed by the app"));
    this.ws?.close(1000, "closed by the app");
  }

  // ---- the connect loop ----

  private url(): string {
    const url = this.options.url;
    return typeof url === "function" ? url() : url;
  }

  private async loop(): Promise<void> {
    let WS: WebSocketConstructor;
    try {
      WS = this.options.WebSocket ?? (await defaultWebSocket());
    } catch (err) {
      this.stop(new ClosedError("protocol_error", undefined, String(err)));
      return;
    }
    while (!this.stopped) {
      this.setState("connecting");
      const { code, reason } = await this.runOnce(WS);
      this.onDisconnect();
      if (this.stopped) break;
      const meaning = closeMeaning(code, reason);
      if (meaning.action === "final") {
        const why = meaning.reason ?? "protocol_error";
        this.stop(new ClosedError(why, code, `closed by the broker with ${code}: ${reason}`));
        break;
      }
      const delay =
        meaning.action === "now" && this.attempt === 0
          ? 0
          : backoffDelay(
              this.attempt,
              this.options.backoffBaseMs ?? 500,
              this.options.backoffMaxMs ?? 30_000,
            );
      this.attempt += 1;
      this.setState("waiting");
      await new Promise<void>((resolve) => {
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

  /** One connection, from the upgrade to its close. */
  private runOnce(WS: WebSocketConstructor): Promise<{ code: number; reason: string }> {
    return new Promise((done) => {
      let ws: WebSocketLike;
      try {
        ws = new WS(this.url());
      } catch (err) {
        done({ code: 1006, reason: String(err) });
        return;
      }
      this.ws = ws;
      // A connection that went dead without a close (a sleeping laptop, a dropped NAT entry)
      // shows as silence: while the client waits for something (the login, a `sent`, an
      // answer) and no frame at all comes for `answerTimeoutMs`, it gives the socket up.
      const timeout = this.options.answerTimeoutMs ?? 20_000;
      let lastFrameAt = Date.now();
      const watch = setInterval(
        () => {
          const waiting =
            this.state !== "live" || this.sender.inFlight() > 0 || this.requests.waiting() > 0;
          if (!waiting || Date.now() - lastFrameAt <= timeout) return;
          if (this.ws === ws) this.ws = null;
          ws.onopen = ws.onmessage = ws.onclose = null;
          try {
            ws.close(4000, "no answer");
          } catch {
            // closing a socket that never opened may throw; it is abandoned either way
          }
          resolve({ code: 1006, reason: `no frame from the broker for ${timeout} ms` });
        },
        Math.max(50, Math.min(1000, timeout / 4)),
      );
      const resolve = (close: { code: number; reason: string }) => {
        clearInterval(watch);
        done(close);
      };
      ws.onopen = () => {
        lastFrameAt = Date.now();
        const login: ClientFrame = {
          op: "login",
          token: this.options.token,
          appid: this.options.appid,
        };
        if (this.cursor.epoch !== null) {
          login.since = this.cursor.held;
          login.epoch = this.cursor.epoch;
        } else if (this.options.replayAll ?? true) {
          login.since = 0;
        }
        ws.send(JSON.stringify(login));
      };
      ws.onmessage = (event) => {
        if (this.ws !== ws) return;
        lastFrameAt = Date.now();
        const text = messageText(event.data);
        if (text === null) return;
        let frame: ServerFrame;
        try {
          frame = JSON.parse(text) as ServerFrame;
        } catch {
          return; // the broker sends JSON only; a broken frame is not ours to act on
        }
        this.onFrame(frame);
      };
      ws.onerror = () => {};
      ws.onclose = (event) => {
        if (this.ws === ws) this.ws = null;
        resolve({ code: event.code, reason: event.reason ?? "" });
      };
    });
  }

  private onDisconnect(): void {
    this.ws = null;
    this.buffer.clear(); // the catch-up after the next login resends everything past `held`
    this.sender.disconnected();
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    const lost = new OctetError("connection_lost", "the connection closed before the answer");
    this.requests.failAll(lost);
  }

  private stop(err: ClosedError): void {
    if (this.stopped) return;
    this.stopped = err;
    this.sender.stopped(err);
    for (const waiter of this.liveWaiters.splice(0)) waiter.reject(err);
    this.requests.failAll(err);
    this.wakeReconnect?.();
    this.setState("closed");
    this.emit("closed", err);
  }

  private setState(state: ConnectionState): void {
    if (this.state === state || this.state === "closed") return;
    this.state = state;
    this.emit("state", state);
  }

  private write(frame: ClientFrame): void {
    this.writeText(JSON.stringify(frame));
  }

  private writeText(text: string): void {
    const ws = this.ws;
    if (ws && ws.readyState === OPEN) ws.send(text);
  }

  private liveOnly(frame: ClientFrame): void {
    if (this.state !== "live") {
      throw new OctetError("offline", "calls are live only: wait for the client to be live");
    }
    this.write(frame);
  }

  private async request(kind: Answer["op"], send: (id: string | undefined) => void): Promise<Answer> {
    for (;;) {
      await this.whenLive();
      try {
        return await this.requests.ask(kind, send);
      } catch (err) {
        // A close lost the answer: ask again on the next connection.
        if (err instanceof OctetError && err.code === "connection_lost") continue;
        throw err;
      }
    }
  }

  // ---- frames from the broker ----

  private onFrame(frame: ServerFrame): void {
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

  private onWelcome(frame: WelcomeFrame): void {
    this.welcome = frame;
    this.setState("catching_up");
    const previous = { ...this.cursor };
    const sameEpoch = previous.epoch === frame.epoch;
    if (frame.recovered && (sameEpoch || previous.epoch === null)) {
      this.refilling = false; // a refill cut short by a close is not needed any more
      if (previous.epoch === null) {
        const replayed = this.options.replayAll ?? true;
        this.cursor = { epoch: frame.epoch, held: replayed ? 0 : frame.seq };
        void this.store.saveCursor(this.cursor);
      }
    } else {
      // With no epoch yet (`since: 0`) the only reason is retention: part of the log is gone.
      const reason: ResyncInfo["reason"] =
        previous.epoch === null ? "pruned" : !sameEpoch ? "epoch_changed" : previous.held > frame.seq ? "rewound" : "pruned";
      // Nothing is replayed: the refill after `synced` pages history; live events wait in
      // the buffer until it is done, so the app still sees the log in `seq` order.
      this.pendingResync = { previous, reason, seq: frame.seq };
      this.refilling = true;
    }
    this.lastAcked = 0;
    this.emit("welcome", frame);
  }

  private async onSynced(frame: SyncedFrame): Promise<void> {
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
        // The connection went away during the refill: the next welcome starts it again.
        return;
      }
    }
    await this.draining;
    this.sendAck();
  }

  /** After `recovered: false`: page history back to the old cursor, then resume in order. */
  private async refill(start: ResyncStart): Promise<void> {
    const { events, info } = await refill(start, this.options.refillLimit ?? 1000, async (before, limit) =>
      (await this.requests.ask("history", (id) => this.write({ op: "history", before, limit, id }))) as HistoryFrame,
    );
    const lowest = events[0]?.seq ?? start.seq + 1;
    this.cursor = { epoch: this.welcome?.epoch ?? start.previous.epoch, held: lowest - 1 };
    await this.store.saveCursor(this.cursor);
    await this.emitAwait("resync", info);
    for (const event of events) if (!this.buffer.has(event.seq)) this.buffer.set(event.seq, event);
    this.refilling = false;
    this.drain();
  }

  private onError(frame: ErrorFrame): void {
    // A `since` beyond the log (a rewound broker) is refused after `welcome`; the resync covers it.
    if (this.state === "catching_up" && this.pendingResync?.reason === "rewound") {
      if (frame.code === "bad_value" && frame.id === undefined) return;
    }
    if (frame.id !== undefined && this.sender.onError(frame)) return;
    if (this.requests.onError(frame)) return;
    this.emit("error", frame);
  }

  // ---- the log, in order, once ----

  private onOwnSent(frame: SentFrame, message: AppMessage | null): void {
    this.emit("sent", frame);
    if (message) this.accept(message);
  }

  private accept(event: LoggedEvent): void {
    if (event.op === "read" && (this.reads.get(event.peer) ?? Infinity) <= event.upto) {
      this.reads.delete(event.peer); // the marker is recorded: no need to send it again
    }
    if (event.seq <= this.cursor.held || this.buffer.has(event.seq)) return; // held: a replay
    this.buffer.set(event.seq, event);
    this.drain();
  }

  private drain(): void {
    this.draining = this.draining.then(() => this.drainNow());
  }

  private async drainNow(): Promise<void> {
    while (!this.refilling) {
      const next = this.buffer.get(this.cursor.held + 1);
      if (next === undefined) return;
      this.buffer.delete(next.seq);
      const keys: string[] = [];
      let fresh = true;
      if (next.op === "message") {
        const key = `m:${next.mid}`;
        fresh = !this.seen.has(key);
        keys.push(key);
        let id = this.sender.idOfMid(next.mid);
        if (id === undefined && next.out && next.origin?.uid === this.welcome?.uid) {
          id = this.sender.claimReplay(next);
        }
        if (id !== undefined) (next as AppMessage).id = id;
      }
      if (fresh) {
        if (next.op === "message") this.refreshProfile(next);
        if (next.op === "profile") this.profiles.set(next.address, next);
        await this.emitAwait(next.op, next as never);
        await this.emitAwait("event", next);
      }
      for (const key of keys) this.seen.add(key);
      this.cursor = { epoch: this.cursor.epoch, held: next.seq };
      if (keys.length > 0) await this.store.addSeen(keys);
      await this.store.saveCursor(this.cursor);
      this.scheduleAck();
    }
  }

  private scheduleAck(): void {
    if (this.ackTimer || this.state !== "live") return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = null;
      this.sendAck();
    }, this.options.ackDelayMs ?? 250);
  }

  private sendAck(): void {
    if (this.state !== "live" || this.cursor.held <= this.lastAcked) return;
    // An ack may not pass the broker's newest seq: `held` never does, it counts events seen.
    this.lastAcked = this.cursor.held;
    this.write({ op: "ack", seq: this.cursor.held });
  }
}

function withData(data: Json | undefined): { data?: Json } {
  return data === undefined ? {} : { data };
}
