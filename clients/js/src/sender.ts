/**
 * The send queue: client ids stored before a frame leaves, retried with the same id on every
 * connection until `sent` or a final refusal, a bounded window on the wire, and a slower pace
 * after `rate_limited`.
 * @module
 */

import { ClosedError, OctetError } from "./close.js";
import type { ErrorFrame, Json, MessageFrame, SentFrame } from "./frames.js";
import { newId } from "./socket.js";
import type { PendingSend, Store } from "./store.js";

/** Options of one `send`. */
export interface SendOptions {
  /** File ids from `upload` to attach (at most 16). */
  files?: string[];
  /** The client id to use (default: a random UUID). Unique across all of the person's devices. */
  id?: string;
}

/** A message of this device's own sends, as the app gets it after `sent`. */
export type OwnMessage = MessageFrame & {
  /** The client id of the send. */
  id: string;
  /** The attached file ids (`files` is absent: the broker has not described them yet). */
  fileIds?: string[];
};

interface SenderDeps {
  store: Store;
  maxQueue: number;
  maxInFlight: number;
  /** Writes a frame's text if the socket is open. */
  write: (text: string) => void;
  isLive: () => boolean;
  /** The person's primary address (the `from` of its messages), once logged in. */
  self: () => string;
  onSent: (frame: SentFrame, message: OwnMessage | null) => void;
  /** The broker refused a send with `rate_limited`; sends now pause `pauseMs` between frames. */
  onThrottle: (pauseMs: number) => void;
}

/** The broker's frame limit; a bigger frame would close the connection with 1009. */
const MAX_FRAME_BYTES = 65536;
/** How many mid → client id pairs are kept, to label replays of own messages. */
const MID_MEMORY = 4096;

/** The send queue of one client. */
export class Sender {
  private queue: PendingSend[] = [];
  private readonly waiters = new Map<
    string,
    { resolve: (sent: SentFrame) => void; reject: (err: Error) => void }
  >();
  private readonly inflight = new Set<string>();
  private readonly mids = new Map<number, string>();
  /** The pause between sends after `rate_limited`, in ms; shrinks on every `sent`. */
  private interval = 0;
  private slowedAt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly deps: SenderDeps) {}

  /** Takes over the sends a previous client left in the store. */
  restore(pending: PendingSend[]): void {
    this.queue = [...pending];
  }

  /** How many sends are on the wire without an answer. */
  inFlight(): number {
    return this.inflight.size;
  }

  /** The ids of unanswered sends, oldest first. */
  pendingIds(): string[] {
    return this.queue.map((p) => p.id);
  }

  /** The client id of one of this client's sends, by its broker mid. */
  idOfMid(mid: number): string | undefined {
    return this.mids.get(mid);
  }

  /**
   * The client id of a pending send that a catch-up replays before its retry is answered: this
   * device's own `out` message whose body and files are those of a pending send.
   */
  claimReplay(message: MessageFrame): string | undefined {
    const text = JSON.stringify(message.body);
    const files = (message.files ?? []).map((f) => f.id).join(",");
    // Only an unambiguous match: two pending sends with the same body (to different people,
    // say) are left to their own `sent` answers rather than one taking the other's message.
    let same = this.queue.filter((p) => (p.bodyText ?? "null") === text && p.files.join(",") === files);
    if (same.length > 1) same = same.filter((p) => p.to === message.to);
    const pending = same.length === 1 ? same[0] : undefined;
    if (pending) this.mids.set(message.mid, pending.id);
    return pending?.id;
  }

  async send(to: string, body: Json | undefined, options: SendOptions): Promise<SentFrame> {
    const id = options.id ?? newId();
    const files = options.files ?? [];
    const bodyText = body === undefined ? null : JSON.stringify(body);
    const pending: PendingSend = { id, to, bodyText, files, createdAt: Date.now() };
    const size = new TextEncoder().encode(frameText(pending)).length;
    if (size > MAX_FRAME_BYTES) {
      throw new OctetError(
        "frame_too_large",
        `the send frame would be ${size} bytes; the broker's limit is ${MAX_FRAME_BYTES}`,
      );
    }
    if (this.queue.length >= this.deps.maxQueue) {
      throw new OctetError(
        "queue_full",
        `${this.queue.length} sends wait for the broker already; wait for some to be sent`,
      );
    }
    if (this.queue.some((p) => p.id === id)) {
      throw new OctetError("duplicate_id", `client id ${id} is already queued`);
    }
    const answered = new Promise<SentFrame>((resolve, reject) => {
      this.waiters.set(id, { resolve, reject });
    });
    // Stored before the frame leaves, so a crash between the two resends it with this id.
    await this.deps.store.putPending(pending);
    this.queue.push(pending);
    this.pump();
    return answered;
  }

  /** Writes queued sends while the window has room and the pace allows. */
  pump(): void {
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

  private later(ms: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.pump();
    }, ms);
  }

  onSent(frame: SentFrame): void {
    const index = this.queue.findIndex((p) => p.id === frame.id);
    this.inflight.delete(frame.id);
    if (index < 0) return; // a second answer to a retry: already handled
    const [pending] = this.queue.splice(index, 1);
    if (!pending) return;
    // Speed up again slowly, so the pace settles near the broker's rate instead of bursting.
    this.interval = this.interval >= 20 ? Math.floor(this.interval * 0.9) : 0;
    this.mids.set(frame.mid, frame.id);
    if (this.mids.size > MID_MEMORY) {
      const oldest = this.mids.keys().next().value;
      if (oldest !== undefined) this.mids.delete(oldest);
    }
    void this.deps.store.deletePending(frame.id);
    const message: OwnMessage = {
      op: "message",
      mid: frame.mid,
      seq: frame.seq,
      from: this.deps.self(),
      to: pending.to,
      ts: frame.ts,
      out: true,
      body: pending.bodyText === null ? null : (JSON.parse(pending.bodyText) as Json),
      id: frame.id,
      ...(pending.files.length > 0 ? { fileIds: pending.files } : {}),
    };
    this.deps.onSent(frame, message);
    const waiter = this.waiters.get(frame.id);
    this.waiters.delete(frame.id);
    waiter?.resolve(frame);
    this.pump();
  }

  /** Handles an `error` that names a send; `false` when the id is not a queued send. */
  onError(frame: ErrorFrame): boolean {
    const index = this.queue.findIndex((p) => p.id === frame.id);
    if (index < 0 || frame.id === undefined) return false;
    this.inflight.delete(frame.id);
    if (frame.code === "rate_limited" || frame.code === "internal") {
      // The frame was dropped (or not stored): send it again, slower.
      // A burst of refusals (every frame of the window refused at once) doubles the pause
      // once: refusals within one pause of the last doubling are the same burst.
      const now = Date.now();
      if (now - this.slowedAt >= this.interval) {
        this.interval = Math.min(5000, Math.max(100, this.interval * 2));
        this.slowedAt = now;
        this.deps.onThrottle(this.interval);
      }
      this.later(this.interval);
      return true;
    }
    // Anything else (unknown_recipient, duplicate_id, bad_value, no_such_file, user_disabled,
    // and codes this client does not know) fails the same way again: the send is given up.
    this.queue.splice(index, 1);
    void this.deps.store.deletePending(frame.id);
    const waiter = this.waiters.get(frame.id);
    this.waiters.delete(frame.id);
    waiter?.reject(new OctetError(frame.code, frame.message));
    this.pump();
    return true;
  }

  /** The connection closed: whatever was on the wire is sent again on the next one. */
  disconnected(): void {
    this.inflight.clear();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** The client stopped for good: promises reject; the sends stay in the store. */
  stopped(err: ClosedError): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const waiter of this.waiters.values()) waiter.reject(err);
    this.waiters.clear();
  }
}

/** The exact frame text of a send: the body is spliced in as stored, so retries are identical. */
function frameText(p: PendingSend): string {
  const head = `{"op":"send","id":${JSON.stringify(p.id)},"to":${JSON.stringify(p.to)}`;
  const files = p.files.length > 0 ? `,"files":${JSON.stringify(p.files)}` : "";
  const body = p.bodyText === null ? "" : `,"body":${p.bodyText}`;
  return `${head}${files}${body}}`;
}
