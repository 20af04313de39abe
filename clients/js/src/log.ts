/**
 * The person's log as the app sees it: each event once, in `seq` order, each after the previous
 * one's handlers finished; the cursor (`held`) and the seen `mid`s stored as it goes; acks sent
 * behind the app, coalesced (proto/clients.md, steps 2, 3 and 5).
 * @module
 */

import type { ClientFrame, LoggedEvent, WelcomeFrame } from "./frames.js";
import type { ResyncStart } from "./refill.js";
import type { Sender } from "./sender.js";
import type { Cursor, Store, StoreSnapshot } from "./store.js";
import type { AppMessage, ResyncInfo } from "./types.js";

/** What the log asks of its client. */
export interface LogHooks {
  store: Store;
  /** Labels the person's own messages with their client ids. */
  sender: Sender;
  /** This device's uid, from the last `welcome`. */
  uid(): number | undefined;
  /** Whether the connection is live (acks are sent only then). */
  isLive(): boolean;
  /** Writes a frame (an `ack`). */
  write(frame: ClientFrame): void;
  /** How long acks are coalesced, in ms. */
  ackDelayMs: number;
  /** A first start replays the whole log (`since: 0`) rather than starting live. */
  replayAll: boolean;
  /** Hands one new event to the app; resolves once its handlers finished. */
  hand(event: LoggedEvent): Promise<void>;
}

/** The ordering, dedupe and cursor of one client's log. */
export class EventLog {
  /** The log's epoch and the highest `seq` handed to the app without a gap. */
  cursor: Cursor = { epoch: null, held: 0 };
  private seen = new Set<string>();
  private readonly buffer = new Map<number, LoggedEvent>();
  private draining: Promise<void> = Promise.resolve();
  private refilling = false;
  private lastAcked = 0;
  private ackTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly hooks: LogHooks) {}

  /** Takes the cursor and the seen keys from the store's snapshot. */
  restore(snapshot: StoreSnapshot): void {
    this.cursor = snapshot.cursor;
    this.seen = new Set(snapshot.seen);
  }

  /** Resolves once every event received so far was handed to the app. */
  idle(): Promise<void> {
    return this.draining;
  }

  /**
   * A `welcome`. When it resumes the log, `null`: the catch-up follows. Otherwise where the
   * refill must start: nothing is replayed, and live events wait in the buffer until the
   * refill is in, so the app still sees the log in `seq` order.
   */
  welcome(frame: WelcomeFrame): ResyncStart | null {
    const previous = { ...this.cursor };
    const sameEpoch = previous.epoch === frame.epoch;
    this.lastAcked = 0;
    if (frame.recovered && (sameEpoch || previous.epoch === null)) {
      this.refilling = false; // a refill cut short by a close is not needed any more
      if (previous.epoch === null) {
        this.cursor = { epoch: frame.epoch, held: this.hooks.replayAll ? 0 : frame.seq };
        void this.hooks.store.saveCursor(this.cursor);
      }
      return null;
    }
    // With no epoch yet (`since: 0`) the only reason is retention: part of the log is gone.
    const reason: ResyncInfo["reason"] =
      previous.epoch === null ? "pruned" : !sameEpoch ? "epoch_changed" : previous.held > frame.seq ? "rewound" : "pruned";
    this.refilling = true;
    return { previous, reason, seq: frame.seq };
  }

  /**
   * The refill's events (oldest first) are in: the cursor moves to just below them in `epoch`,
   * `announce` tells the app (the `resync` event), then they are handed over with the live
   * events that waited.
   */
  async refilled(
    start: ResyncStart,
    epoch: string | null,
    events: LoggedEvent[],
    announce: () => Promise<void>,
  ): Promise<void> {
    const lowest = events[0]?.seq ?? start.seq + 1;
    this.cursor = { epoch, held: lowest - 1 };
    await this.hooks.store.saveCursor(this.cursor);
    await announce();
    for (const event of events) if (!this.buffer.has(event.seq)) this.buffer.set(event.seq, event);
    this.refilling = false;
    this.drain();
  }

  /** A log event from the broker (live, catch-up, or made from a `sent`). */
  accept(event: LoggedEvent): void {
    if (event.seq <= this.cursor.held || this.buffer.has(event.seq)) return; // held: a replay
    this.buffer.set(event.seq, event);
    this.drain();
  }

  /** The connection closed: the catch-up after the next login resends everything past `held`. */
  disconnected(): void {
    this.buffer.clear();
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
  }

  /** Acks `held` now, unless it was acked already on this connection. */
  sendAck(): void {
    if (!this.hooks.isLive() || this.cursor.held <= this.lastAcked) return;
    // An ack may not pass the broker's newest seq: `held` never does, it counts events seen.
    this.lastAcked = this.cursor.held;
    this.hooks.write({ op: "ack", seq: this.cursor.held });
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
        const sender = this.hooks.sender;
        let id = sender.idOfMid(next.mid);
        if (id === undefined && next.out && next.origin?.uid === this.hooks.uid()) {
          id = sender.claimReplay(next);
        }
        if (id !== undefined) (next as AppMessage).id = id;
      }
      if (fresh) await this.hooks.hand(next);
      for (const key of keys) this.seen.add(key);
      this.cursor = { epoch: this.cursor.epoch, held: next.seq };
      if (keys.length > 0) await this.hooks.store.addSeen(keys);
      await this.hooks.store.saveCursor(this.cursor);
      this.scheduleAck();
    }
  }

  private scheduleAck(): void {
    if (this.ackTimer || !this.hooks.isLive()) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = null;
      this.sendAck();
    }, this.hooks.ackDelayMs);
  }
}
