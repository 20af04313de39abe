/**
 * The wire frames of octet's WebSocket protocol (proto/frames.md), typed. Every frame the broker
 * sends has a type here; fields the broker adds later are kept (clients must ignore what they do
 * not know), so the types are open only through the documented optional fields.
 * @module
 */

/** Any JSON value: message bodies and call `data` are opaque to the broker. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** The thumbnail of an image attachment. */
export interface Thumb {
  url: string;
  width: number;
  height: number;
  type: string;
  size: number;
}

/** A file as messages carry it and `POST /files` answers it (proto/files.md). */
export interface Attachment {
  id: string;
  name: string;
  size: number;
  type: string;
  sha256: string;
  url: string;
  width?: number;
  height?: number;
  thumb?: Thumb;
  blurhash?: string;
}

/** `welcome`: the answer to a good login. */
export interface WelcomeFrame {
  op: "welcome";
  uid: number;
  address: string;
  primary: { uid: number; address: string };
  seq: number;
  epoch: string;
  recovered: boolean;
}

/** `synced`: the catch-up after `welcome` is complete. */
export interface SyncedFrame {
  op: "synced";
  seq: number;
  replayed: number;
}

/** `sent`: the broker stored this device's `send`. */
export interface SentFrame {
  op: "sent";
  id: string;
  mid: number;
  seq: number;
  ts: number;
}

/** `message`: a message in this person's log (incoming, or `out` from its other devices). */
export interface MessageFrame {
  op: "message";
  mid: number;
  seq: number;
  from: string;
  to: string;
  ts: number;
  out?: true;
  origin?: { uid: number; device?: string };
  body: Json;
  pv?: number;
  files?: Attachment[];
}

/** `receipt`: a message of this person was delivered to or read by `peer`. */
export interface ReceiptFrame {
  op: "receipt";
  seq: number;
  mid: number;
  status: "delivered" | "read";
  peer: string;
  ts: number;
}

/** `read`: this person read the conversation with `peer` up to `upto` (a mid). */
export interface ReadFrame {
  op: "read";
  seq: number;
  peer: string;
  upto: number;
  ts: number;
}

/** `call_record`: a call of this person ended. */
export interface CallRecordFrame {
  op: "call_record";
  seq: number;
  call: string;
  peer: string;
  out?: true;
  status: "answered" | "missed" | "rejected" | "cancelled";
  duration_ms: number;
  ts: number;
}

/** The profile fields a person may set. */
export interface Profile {
  name?: string;
  status?: string;
  avatar?: string;
  fields?: { [key: string]: Json };
}

/** `profile` with `seq`: this person's profile changed (an event of its log). */
export interface ProfileEventFrame {
  op: "profile";
  seq: number;
  address: string;
  profile: Profile;
  version: number;
  ts: number;
}

/** `profile` without `seq`: the answer to a `profile` `get`. */
export interface ProfileAnswerFrame {
  op: "profile";
  /** The request's `id`, when it had one. */
  id?: string;
  address: string;
  profile: Profile;
  version: number;
}

/** The actions a `call` frame from the broker can carry. */
export type CallAction =
  | "ring"
  | "answer"
  | "answered_elsewhere"
  | "reject"
  | "rejected_elsewhere"
  | "signal"
  | "hangup"
  | "missed";

/** `call`: a live call event (never logged). */
export interface CallFrame {
  op: "call";
  call: string;
  action: CallAction;
  from: string;
  to: string;
  out?: true;
  data?: Json;
}

/** `history`: a page of retained events, oldest first. */
export interface HistoryFrame {
  op: "history";
  /** The request's `id`, when it had one. */
  id?: string;
  events: LoggedEvent[];
  more: boolean;
}

/** `file_url`: signed download URLs of a file. */
export interface FileUrlFrame {
  op: "file_url";
  id: string;
  url: string;
  thumb_url?: string;
  expires: number;
}

/** `error`: a frame was refused (proto/errors.md lists every `code`). */
export interface ErrorFrame {
  op: "error";
  code: string;
  message: string;
  id?: string;
  call?: string;
}

/** `typing`: a person started or stopped typing (never logged). */
export interface TypingFrame {
  op: "typing";
  from: string;
  to: string;
  state: "start" | "stop";
  out?: true;
}

/** `presence`: a subscribed person's status (never logged). */
export interface PresenceFrame {
  op: "presence";
  address: string;
  status: "online" | "offline";
  last_seen?: number;
}

/** One device of a person, as `devices` and `devices_changed` list it. */
export interface DeviceInfo {
  uid: number;
  address: string;
  /** The installation id, or null. */
  device: string | null;
  /** The appid of its latest token, or null. */
  appid: string | null;
  name: string | null;
  /** In `devices`: connected now; in `devices_changed`: when the change was stored. */
  online: boolean;
  primary: boolean;
  /** False when it or its primary is disabled. */
  active: boolean;
}

/** `devices_changed`: a device of this person was linked, renamed, revoked or removed (logged). */
export interface DevicesChangedFrame {
  op: "devices_changed";
  seq: number;
  ts: number;
  change: "linked" | "renamed" | "revoked" | "removed";
  /** The device concerned (a removed one is no longer in `devices`). */
  uid: number;
  /** Every device of the person after the change, primary first. */
  devices: DeviceInfo[];
}

/** `devices`: the answer to a `devices` request (not an event: no `seq`). */
export interface DevicesFrame {
  op: "devices";
  devices: DeviceInfo[];
}

/** `revoke`: the answer to a `revoke`: the device and how many of its tokens were revoked. */
export interface RevokeFrame {
  op: "revoke";
  uid: number;
  revoked: number;
}

/** The events of a person's log: each has a `seq`. */
export type LoggedEvent =
  | MessageFrame
  | ReceiptFrame
  | ReadFrame
  | CallRecordFrame
  | ProfileEventFrame
  | DevicesChangedFrame;

/** Every frame the broker sends. */
export type ServerFrame =
  | WelcomeFrame
  | SyncedFrame
  | SentFrame
  | LoggedEvent
  | ProfileAnswerFrame
  | CallFrame
  | HistoryFrame
  | FileUrlFrame
  | ErrorFrame
  | TypingFrame
  | PresenceFrame
  | DevicesFrame
  | RevokeFrame;

/**
 * Whether a frame is an event of the person's log: every frame with a `seq` except `welcome`,
 * `synced` and `sent` (which name a place in the log but are not events of it). A logged kind
 * this client does not know yet (a newer broker's) still counts, so the
 * cursor moves past it instead of waiting forever for its `seq`.
 */
export function isLoggedEvent(frame: ServerFrame): frame is LoggedEvent {
  switch (frame.op) {
    case "welcome":
    case "synced":
    case "sent":
      return false;
    default:
      return typeof (frame as { seq?: unknown }).seq === "number";
  }
}

/** Every frame a device sends. */
export type ClientFrame =
  | { op: "login"; token: string; appid: string; since?: number; epoch?: string }
  | { op: "send"; id: string; to: string; body?: Json; files?: string[] }
  | { op: "ack"; seq: number }
  | { op: "read"; peer: string; upto: number }
  | { op: "history"; before?: number; limit?: number; id?: string }
  | { op: "profile"; set: { [key: string]: Json }; id?: string }
  | { op: "profile"; get: string; id?: string }
  | { op: "file_url"; id: string }
  | { op: "call"; call: string; action: "ring"; to: string; data?: Json }
  | { op: "call"; call: string; action: "answer" | "reject" | "hangup" | "signal"; data?: Json }
  | { op: "typing"; to: string; state: "start" | "stop" }
  | { op: "presence"; subscribe?: string[]; unsubscribe?: string[] }
  | { op: "devices" }
  | { op: "revoke"; uid: number };
