/**
 * The frames a device sends (proto/frames.md, "Client → broker"), typed.
 * @module
 */

import type { Json } from "./frames.js";

/** Every frame a device sends (proto/frames.md, "Client → broker"). */
export type ClientFrame =
  | {
      /** The first frame of every connection. */
      op: "login";
      /** The user token. */
      token: string;
      /** The appid the token was issued for. */
      appid: string;
      /** The highest contiguous `seq` held (0: replay everything); absent: start live. */
      since?: number;
      /** The epoch `since` counts in. */
      epoch?: string;
    }
  | {
      /** A message. */
      op: "send";
      /** The client id: a retry with the same id is stored once. */
      id: string;
      /** Any address of the recipient person. */
      to: string;
      /** Any JSON (required unless `files` is given). */
      body?: Json;
      /** Ids of uploaded files to attach. */
      files?: string[];
    }
  | {
      /** The device holds every event up to `seq`. */
      op: "ack";
      /** The highest contiguous `seq` handled. */
      seq: number;
    }
  | {
      /** The conversation with `peer` is read up to `upto`. */
      op: "read";
      /** Any address of the other person. */
      peer: string;
      /** The newest message from `peer` read (a `mid`). */
      upto: number;
    }
  | {
      /** A page of older events. */
      op: "history";
      /** Only events with a lower `seq`; absent: from the newest. */
      before?: number;
      /** At most this many events, 1 to 500 (default 50). */
      limit?: number;
      /** A tag the answer and any refusal carry back. */
      id?: string;
    }
  | {
      /** Changes this person's profile. */
      op: "profile";
      /** The keys to change; null removes one. */
      set: { [key: string]: Json };
      /** A tag any refusal carries back. */
      id?: string;
    }
  | {
      /** Asks for a person's profile. */
      op: "profile";
      /** Any address of the person. */
      get: string;
      /** A tag the answer and any refusal carry back. */
      id?: string;
    }
  | {
      /** Signed download URLs of a file. */
      op: "file_url";
      /** The file id. */
      id: string;
    }
  | {
      /** Rings a person. */
      op: "call";
      /** The call id, made by the caller. */
      call: string;
      /** Start ringing every device of the callee. */
      action: "ring";
      /** Any address of the callee person. */
      to: string;
      /** A payload for the callee (an SDP offer). */
      data?: Json;
    }
  | {
      /** Acts on a call. */
      op: "call";
      /** The call id. */
      call: string;
      /** What this device does. */
      action: "answer" | "reject" | "hangup" | "signal";
      /** A payload for the other device (SDP, ICE). */
      data?: Json;
    }
  | {
      /** This device started or stopped typing to a person. */
      op: "typing";
      /** Any address of the other person. */
      to: string;
      /** Started or stopped. */
      state: "start" | "stop";
    }
  | {
      /** Changes this connection's presence subscriptions. */
      op: "presence";
      /** Addresses to subscribe to. */
      subscribe?: string[];
      /** Addresses to unsubscribe from. */
      unsubscribe?: string[];
    }
  | {
      /** Asks for this person's devices. */
      op: "devices";
      /** The request's tag, echoed on the answer and on any refusal. */
      id?: string;
    }
  | {
      /** Revokes a device's tokens. */
      op: "revoke";
      /** The device's user id. */
      uid: number;
      /** The request's tag, echoed on the answer and on any refusal. */
      id?: string;
    };
