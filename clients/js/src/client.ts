/**
 * The client: one device's connection to the broker, kept alive across closes, with the
 * cursor/dedupe/retry loop of proto/frames.md ("How to write a client") done for the app.
 * @module
 */

import { ClosedError, OctetError, backoffDelay, closeMeaning } from "./close.js";
import { Emitter } from "./emitter.js";
import { Link, loginFrame } from "./connection.js";
import type {
  ClientFrame,
  DevicesFrame,
  ErrorFrame,
  FileUrlFrame,
  HistoryFrame,
  Json,
  LoggedEvent,
  Profile,
  ProfileAnswerFrame,
  RevokeFrame,
  SentFrame,
  ServerFrame,
  SyncedFrame,
  WelcomeFrame,
} from "./frames.js";
import { isLoggedEvent } from "./frames.js";
import { EventLog } from "./log.js";
import { ProfileCache } from "./profiles.js";
import { Sender, type SendOptions } from "./sender.js";
import { defaultWebSocket, newId } from "./socket.js";
import type { WebSocketConstructor } from "./socket.js";
import { MemoryStore } from "./store.js";
import type { Cursor, Store } from "./store.js";
import type { AppMessage, ClientEvents, ConnectOptions, ConnectionState } from "./types.js";
import { refill, type ResyncStart } from "./refill.js";
import { Requests, lost, patiently, type Answer } from "./requests.js";
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
  private readonly log: EventLog;
  private readonly link = new Link();
  private stopped: ClosedError | null = null;
  private attempt = 0;
  private readonly reads = new Map<string, number>();
  private readonly presence = new Set<string>();
  private readonly profiles: ProfileCache;
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
      write: (text) => this.link.write(text),
      isLive: () => this.state === "live",
      self: () => this.welcome?.primary.address ?? "",
      onSent: (frame, message) => this.onOwnSent(frame, message),
      onThrottle: (pauseMs) => this.emit("throttled", { pauseMs }),
    });
    this.profiles = new ProfileCache({
      get: (address) => this.getProfile(address),
      fetched: (answer) => this.emit("peer_profile", answer),
      refresh: options.profileCache !== false,
    });
    this.log = new EventLog({
      store: this.store,
      sender: this.sender,
      uid: () => this.welcome?.uid,
      isLive: () => this.state === "live",
      write: (frame) => this.write(frame),
      ackDelayMs: options.ackDelayMs ?? 250,
      replayAll: options.replayAll ?? true,
      hand: (event) => this.hand(event),
    });
  }

  /** Loads the store and starts the connect loop. */
  async start(): Promise<void> {
    const snapshot = await this.store.load();
    this.log.restore(snapshot);
    this.sender.restore(snapshot.pending);
    void this.loop();
  }

  /** The cursor: the log's epoch and the highest `seq` handed to the app without a gap. */
  get position(): Cursor {
    return { ...this.log.cursor };
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
    this.profiles.set(answer);
    return answer;
  }

  /** The cached profile of a person (by primary address), kept fresh from messages' `pv`. */
  profileOf(address: string): ProfileAnswerFrame | undefined {
    return this.profiles.of(address);
  }

  /** This person's devices now, primary first (`online`: connected right now). */
  async devices(): Promise<DevicesFrame["devices"]> {
    const answer = (await this.request("devices", (id) => this.write({ op: "devices", id }))) as DevicesFrame;
    return answer.devices;
  }

  /**
   * Revokes every token of a device of this person (`uid` from {@link devices}; this device's
   * own uid logs it out, and the client then closes for good). Rejects with `forbidden` unless
   * the broker runs with `--device-self-revoke`, `no_such_user` for a uid not of this person.
   */
  async revoke(uid: number): Promise<RevokeFrame> {
    const answer = {
      ...((await this.request("revoke", (id) => this.write({ op: "revoke", uid, id }))) as RevokeFrame),
    };
    delete answer.id; // the request's tag, not part of the answer
    return answer;
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
    return this.log.idle();
  }

  /** Closes for good. Unanswered sends stay in the store for the next client. */
  close(): void {
    this.stop(new ClosedError("closed_by_app", undefined, "closed by the app"));
    this.link.close(1000, "closed by the app");
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
      const { code, reason } = await this.link.run(WS, {
        url: () => this.url(),
        login: () => {
          const { token, appid, replayAll } = this.options;
          return loginFrame(token, appid, this.log.cursor, replayAll ?? true);
        },
        onFrame: (frame) => this.onFrame(frame),
        waiting: () => this.state !== "live" || this.sender.inFlight() > 0 || this.requests.waiting() > 0,
        timeoutMs: this.options.answerTimeoutMs ?? 20_000,
      });
      this.onDisconnect();
      if (this.stopped) break;
      const meaning = closeMeaning(code, reason);
      if (meaning.action === "final") {
        const why = meaning.reason ?? "protocol_error";
        this.stop(new ClosedError(why, code, `closed by the broker with ${code}: ${reason}`));
        break;
      }
      const { backoffBaseMs = 500, backoffMaxMs = 30_000 } = this.options;
      // "now" once; a close that repeats backs off like any other.
      const now = meaning.action === "now" && this.attempt === 0;
      const delay = now ? 0 : backoffDelay(this.attempt, backoffBaseMs, backoffMaxMs);
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

  private onDisconnect(): void {
    this.link.drop();
    this.log.disconnected();
    this.sender.disconnected();
    this.requests.failAll(lost());
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

  /** Writes a frame if the socket is open (else false: offline frames are dropped). */
  private write(frame: ClientFrame): boolean {
    return this.link.write(JSON.stringify(frame));
  }

  private liveOnly(frame: ClientFrame): void {
    if (this.state !== "live") {
      throw new OctetError("offline", "calls are live only: wait for the client to be live");
    }
    this.write(frame);
  }

  private async request(kind: Answer["op"], send: (id: string) => boolean): Promise<Answer> {
    for (;;) {
      await this.whenLive();
      try {
        return await patiently(() => this.requests.ask(kind, send));
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
    // Not resumed: the refill after `synced` pages history (proto/clients.md, step 2).
    this.pendingResync = this.log.welcome(frame);
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
    await this.log.idle();
    this.log.sendAck();
  }

  /** After `recovered: false`: page history back to the old cursor, then resume in order. */
  private async refill(start: ResyncStart): Promise<void> {
    const { events, info } = await refill(start, this.options.refillLimit ?? 1000, async (before, limit) =>
      (await patiently(() =>
        this.requests.ask("history", (id) => this.write({ op: "history", before, limit, id })),
      )) as HistoryFrame,
    );
    const epoch = this.welcome?.epoch ?? start.previous.epoch;
    await this.log.refilled(start, epoch, events, () => this.emitAwait("resync", info));
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
    this.log.accept(event);
  }

  /** Hands a new log event to the app, in order (the log calls it), after the caches saw it. */
  private async hand(event: LoggedEvent): Promise<void> {
    if (event.op === "message") this.profiles.seen(event);
    if (event.op === "profile") this.profiles.set(event);
    await this.emitAwait(event.op, event as never);
    await this.emitAwait("event", event);
  }
}

function withData(data: Json | undefined): { data?: Json } {
  return data === undefined ? {} : { data };
}
