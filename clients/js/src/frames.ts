/**
 * The wire frames of octet's WebSocket protocol (proto/frames.md), typed. Every frame the broker
 * sends has a type here; fields the broker adds later are kept (clients must ignore what they do
 * not know), so the types are open only through the documented optional fields.
 * @module
 */

export type { ClientFrame } from "./client-frames.js";

/** Any JSON value: message bodies and call `data` are opaque to the broker. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** The thumbnail of an image attachment. */
export interface Thumb {
  /** Its path on the broker (`/files/…/thumb`). */
  url: string;
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** Its media type. */
  type: string;
  /** Its size in bytes. */
  size: number;
}

/** A file as messages carry it and `POST /files` answers it (proto/files.md). */
export interface Attachment {
  /** The file id (`f_…`), as `send`'s `files` names it. */
  id: string;
  /** The file's name as uploaded. */
  name: string;
  /** Its size in bytes. */
  size: number;
  /** Its media type, sniffed from the bytes. */
  type: string;
  /** The SHA-256 of its bytes, in hex. */
  sha256: string;
  /** Its path on the broker (`/files/f_…`); make it absolute with `httpUrl`, or sign it with `fileUrl`. */
  url: string;
  /** Images: width in pixels. */
  width?: number;
  /** Images: height in pixels. */
  height?: number;
  /** Images: a small preview. */
  thumb?: Thumb;
  /** Images: a BlurHash placeholder. */
  blurhash?: string;
}

/** `welcome`: the answer to a good login. */
export interface WelcomeFrame {
  /** The frame's kind. */
  op: "welcome";
  /** This device's user id. */
  uid: number;
  /** This device's own address. */
  address: string;
  /** The person's primary user: the address other people see. */
  primary: {
    /** The primary user's id. */
    uid: number;
    /** The person's primary address. */
    address: string;
  };
  /** The newest `seq` of the person's log. */
  seq: number;
  /** The log's epoch: a cursor from another epoch means nothing here. */
  epoch: string;
  /** `false`: the catch-up from `since` is impossible (see `resync`). */
  recovered: boolean;
}

/** `synced`: the catch-up after `welcome` is complete. */
export interface SyncedFrame {
  /** The frame's kind. */
  op: "synced";
  /** The last replayed `seq` (the welcome's). */
  seq: number;
  /** How many events the catch-up sent. */
  replayed: number;
}

/** `sent`: the broker stored this device's `send`. */
export interface SentFrame {
  /** The frame's kind. */
  op: "sent";
  /** The client id from `send`. */
  id: string;
  /** The broker's message id, the same on every device. */
  mid: number;
  /** The message's place in the sender person's log. */
  seq: number;
  /** When the broker recorded it (ms since the epoch). */
  ts: number;
}

/** `message`: a message in this person's log (incoming, or `out` from its other devices). */
export interface MessageFrame {
  /** The frame's kind. */
  op: "message";
  /** The broker's message id, the same on every device. */
  mid: number;
  /** The event's place in this person's log. */
  seq: number;
  /** The sender person's primary address. */
  from: string;
  /** The recipient person's primary address. */
  to: string;
  /** When the broker accepted it (ms since the epoch). */
  ts: number;
  /** On this person's own messages (sent from any of its devices). */
  out?: true;
  /** On `out` messages: the device that sent it. */
  origin?: {
    /** The sending user's id. */
    uid: number;
    /** The sending device's installation id, when it has one. */
    device?: string;
  };
  /** The message's JSON body, as sent. */
  body: Json;
  /** The sender's profile version; above the cached one, get the profile again. */
  pv?: number;
  /** The attachments, in the order sent. */
  files?: Attachment[];
}

/** `receipt`: a message of this person was delivered to or read by `peer`. */
export interface ReceiptFrame {
  /** The frame's kind. */
  op: "receipt";
  /** The event's place in this person's log. */
  seq: number;
  /** The message it is about. */
  mid: number;
  /** `delivered`: a device of `peer` acked it; `read`: `peer` read it. */
  status: "delivered" | "read";
  /** The other person's primary address. */
  peer: string;
  /** When the broker recorded it (ms since the epoch). */
  ts: number;
}

/** `read`: this person read the conversation with `peer` up to `upto` (a mid). */
export interface ReadFrame {
  /** The frame's kind. */
  op: "read";
  /** The event's place in this person's log. */
  seq: number;
  /** The other person's primary address. */
  peer: string;
  /** The newest message from `peer` read (a `mid`). */
  upto: number;
  /** When the broker recorded it (ms since the epoch). */
  ts: number;
}

/** `call_record`: a call of this person ended. */
export interface CallRecordFrame {
  /** The frame's kind. */
  op: "call_record";
  /** The event's place in this person's log. */
  seq: number;
  /** The call id. */
  call: string;
  /** The other person's primary address. */
  peer: string;
  /** This person called. */
  out?: true;
  /** How it ended. */
  status: "answered" | "missed" | "rejected" | "cancelled";
  /** How long it was connected (0 unless answered). */
  duration_ms: number;
  /** When it ended (ms since the epoch). */
  ts: number;
}

/** The profile fields a person may set. */
export interface Profile {
  /** A display name, up to 255 characters. */
  name?: string;
  /** A status line, up to 1024 characters. */
  status?: string;
  /** A picture's URL, up to 1024 characters. */
  avatar?: string;
  /** The app's own keys. */
  fields?: { [key: string]: Json };
}

/** `profile` with `seq`: this person's profile changed (an event of its log). */
export interface ProfileEventFrame {
  /** The frame's kind. */
  op: "profile";
  /** The event's place in this person's log. */
  seq: number;
  /** This person's primary address. */
  address: string;
  /** The whole profile after the change. */
  profile: Profile;
  /** The profile's version after the change. */
  version: number;
  /** When the broker recorded it (ms since the epoch). */
  ts: number;
}

/** `profile` without `seq`: the answer to a `profile` `get`. */
export interface ProfileAnswerFrame {
  /** The frame's kind. */
  op: "profile";
  /** The request's `id`, when it had one. */
  id?: string;
  /** The person's primary address. */
  address: string;
  /** The whole profile, as it is now. */
  profile: Profile;
  /** The profile's version (0: never set); messages carry it as `pv`. */
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
  /** The frame's kind. */
  op: "call";
  /** The call id. */
  call: string;
  /** What happened (proto/frames.md lists who gets which). */
  action: CallAction;
  /** The caller person's primary address. */
  from: string;
  /** The callee person's primary address. */
  to: string;
  /** On the caller person's devices. */
  out?: true;
  /** The acting device's payload (SDP, ICE), where the action has one. */
  data?: Json;
}

/** `history`: a page of retained events, oldest first. */
export interface HistoryFrame {
  /** The frame's kind. */
  op: "history";
  /** The request's `id`, when it had one. */
  id?: string;
  /** The events, oldest first, each as delivered live. */
  events: LoggedEvent[];
  /** Older retained events exist: page on with `before` = the first event's `seq`. */
  more: boolean;
}

/** `file_url`: signed download URLs of a file. */
export interface FileUrlFrame {
  /** The frame's kind. */
  op: "file_url";
  /** The file id asked for. */
  id: string;
  /** The signed download URL. */
  url: string;
  /** The thumbnail's signed URL, for images. */
  thumb_url?: string;
  /** When the URLs stop working (ms since the epoch). */
  expires: number;
}

/** `error`: a frame was refused (proto/errors.md lists every `code`). */
export interface ErrorFrame {
  /** The frame's kind. */
  op: "error";
  /** The stable error code: branch on it. */
  code: string;
  /** What is wrong and what to do, for humans. */
  message: string;
  /** The `id` of the refused frame (a `send`, `history`, `profile` or `file_url`). */
  id?: string;
  /** The call id of a refused call action. */
  call?: string;
}

/** `typing`: a person started or stopped typing (never logged). */
export interface TypingFrame {
  /** The frame's kind. */
  op: "typing";
  /** The typing person's primary address. */
  from: string;
  /** The other person's primary address. */
  to: string;
  /** Show the indicator until `stop`. */
  state: "start" | "stop";
  /** On the typing person's other devices. */
  out?: true;
}

/** `presence`: a subscribed person's status (never logged). */
export interface PresenceFrame {
  /** The frame's kind. */
  op: "presence";
  /** The subscribed person's primary address. */
  address: string;
  /** Whether any device of the person is connected. */
  status: "online" | "offline";
  /** Offline: when its last device left (ms since the epoch). */
  last_seen?: number;
}

/** One device of a person, as `devices` and `devices_changed` list it. */
export interface DeviceInfo {
  /** The device's user id (for `revoke`). */
  uid: number;
  /** The device's own address. */
  address: string;
  /** The installation id, or null. */
  device: string | null;
  /** The appid of its latest token, or null. */
  appid: string | null;
  /** The name the backend gave the device, or null. */
  name: string | null;
  /** In `devices`: connected now; in `devices_changed`: when the change was stored. */
  online: boolean;
  /** The person's primary user. */
  primary: boolean;
  /** False when it or its primary is disabled. */
  active: boolean;
}

/** `devices_changed`: a device of this person was linked, renamed, revoked or removed (logged). */
export interface DevicesChangedFrame {
  /** The frame's kind. */
  op: "devices_changed";
  /** The event's place in this person's log. */
  seq: number;
  /** When the broker recorded it (ms since the epoch). */
  ts: number;
  /** What happened to the device. */
  change: "linked" | "renamed" | "revoked" | "removed";
  /** The device concerned (a removed one is no longer in `devices`). */
  uid: number;
  /** Every device of the person after the change, primary first. */
  devices: DeviceInfo[];
}

/** `devices`: the answer to a `devices` request (not an event: no `seq`). */
export interface DevicesFrame {
  /** The frame's kind. */
  op: "devices";
  /** The request's `id`, when it had one. */
  id?: string;
  /** Every device of the person, primary first. */
  devices: DeviceInfo[];
}

/** `revoke`: the answer to a `revoke`: the device and how many of its tokens were revoked. */
export interface RevokeFrame {
  /** The frame's kind. */
  op: "revoke";
  /** The request's `id`, when it had one. */
  id?: string;
  /** The device's user id. */
  uid: number;
  /** How many of its tokens were revoked. */
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
