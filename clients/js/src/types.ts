/**
 * The public types of the client: its options, what the app gets, and its events.
 * @module
 */

import type { ClosedError } from "./close.js";
import type {
  CallFrame,
  CallRecordFrame,
  DevicesChangedFrame,
  ErrorFrame,
  LoggedEvent,
  MessageFrame,
  PresenceFrame,
  ProfileAnswerFrame,
  ProfileEventFrame,
  ReadFrame,
  ReceiptFrame,
  SentFrame,
  SyncedFrame,
  TypingFrame,
  WelcomeFrame,
} from "./frames.js";
import type { WebSocketConstructor } from "./socket.js";
import type { Cursor, Store } from "./store.js";

/** What `connect` needs. */
export interface ConnectOptions {
  /** The broker's WebSocket URL (`ws://host:port/ws`), or a function asked at each connect. */
  url: string | (() => string);
  /** The device's user token (`octu_…`) from the app backend's `useradd`. */
  token: string;
  /** The appid the token was issued for. */
  appid: string;
  /** Where the cursor, pending sends and dedupe keys live. Default: a new `MemoryStore`. */
  store?: Store;
  /**
   * On the very first start (no epoch stored): `true` (default) replays the whole retained log
   * (`since: 0`); `false` starts live and leaves the past to `history()`.
   */
  replayAll?: boolean;
  /** The first reconnect delay ceiling in ms (default 500); it doubles per failed attempt. */
  backoffBaseMs?: number;
  /** The largest reconnect delay ceiling in ms (default 30000). */
  backoffMaxMs?: number;
  /** How long acks are coalesced, in ms (default 250). */
  ackDelayMs?: number;
  /** The most unanswered sends in the store (default 1000); `send` refuses more. */
  maxQueue?: number;
  /** The most sends on the wire without a `sent` (default 32). */
  maxInFlight?: number;
  /** After `recovered: false`, at most this many events are refilled from history (default 1000). */
  refillLimit?: number;
  /**
   * While the client waits for the broker (the login, a `sent`, an answer) and no frame at all
   * arrives for this long, it takes the connection for dead and reconnects (default 20000 ms).
   */
  answerTimeoutMs?: number;
  /**
   * Keep other persons' profiles fresh: a message whose `pv` is above the cached version (or
   * from an unknown sender) makes the client ask for the profile (`peer_profile`). Default true.
   */
  profileCache?: boolean;
  /** A WebSocket constructor; default the global one, else `ws`. */
  WebSocket?: WebSocketConstructor;
}

/** A message as the app sees it: the broker's frame, plus the client id on this person's own sends. */
export interface AppMessage extends MessageFrame {
  /** The client id, when this device (or a `send` in its store) sent it. */
  id?: string;
  /** On this device's own copy (made from `sent`): the attached file ids (`files` is absent). */
  fileIds?: string[];
}

/** Told to the app when the log could not be resumed where it left off. */
export interface ResyncInfo {
  /** `epoch_changed`: a new log (start over); `pruned`: retention removed part of the gap;
   * `rewound`: the broker's log is behind this device's cursor (restored from a backup). */
  reason: "epoch_changed" | "pruned" | "rewound";
  /** The cursor held before. */
  previous: Cursor;
  /** The new log position (`welcome.seq`). */
  seq: number;
  /** The `seq` range that is missing for good and was not refilled, when there is one. */
  lost?: {
    /** The first missing `seq`. */
    from: number;
    /** The last missing `seq`. */
    to: number;
  };
  /**
   * `true` when the refill reached the previous cursor (after another epoch: the first event of
   * the new log). When `false` without `lost`, the refill stopped at `refillLimit`: page
   * `history()` for older events.
   */
  complete: boolean;
}

/** Where the connection is. */
export type ConnectionState = "connecting" | "catching_up" | "live" | "waiting" | "closed";

/** Every event a client emits. Log events (`message` … `event`) are awaited before the ack. */
export interface ClientEvents {
  /** A message in order, once: incoming, from this person's other devices (`out`), or own. */
  message: AppMessage;
  /** A message of this person was delivered to or read by the other person. */
  receipt: ReceiptFrame;
  /** This person read a conversation (on any of its devices). */
  read: ReadFrame;
  /** A call of this person ended. */
  call_record: CallRecordFrame;
  /** This person's profile changed. */
  profile: ProfileEventFrame;
  /** A device of this person was linked, renamed, revoked or removed. */
  devices_changed: DevicesChangedFrame;
  /** Every log event in `seq` order, after its own handler. */
  event: LoggedEvent;
  /** A live call event: ring, answer, …, `answered_elsewhere`, `missed`. */
  call: CallFrame;
  /** A person started or stopped typing. */
  typing: TypingFrame;
  /** A subscribed person came online or went offline. */
  presence: PresenceFrame;
  /** A refused frame that no promise of this client carries. */
  error: ErrorFrame;
  /** Logged in (after every connect). */
  welcome: WelcomeFrame;
  /** The catch-up after `welcome` is complete: the client is live. */
  synced: SyncedFrame;
  /** The log could not be resumed: the app should expect a jump or a new start. */
  resync: ResyncInfo;
  /** A `send` was stored by the broker (also one restored from the store). */
  sent: SentFrame;
  /** The connection state changed. */
  state: ConnectionState;
  /** A person's profile, fetched because a message showed a newer version (`profileOf`). */
  peer_profile: ProfileAnswerFrame;
  /** The broker refused sends for the rate (`rate_limited`): they are retried, this far apart. */
  throttled: {
    /** The pause between send frames now, in ms. */
    pauseMs: number;
  };
  /** The client stopped for good; it will not reconnect. */
  closed: ClosedError;
}
