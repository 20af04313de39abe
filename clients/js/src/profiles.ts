/**
 * The cache of other persons' profiles: filled by `getProfile` answers and this person's own
 * `profile` events, refreshed when a message shows a newer version (`pv`) than the cached one.
 * @module
 */

import type { MessageFrame, ProfileAnswerFrame, ProfileEventFrame } from "./frames.js";

/** What the cache asks of its client. */
export interface ProfileHooks {
  /** Asks the broker for a profile (and caches the answer through {@link ProfileCache.set}). */
  get(address: string): Promise<ProfileAnswerFrame>;
  /** A profile fetched because a message showed a newer version. */
  fetched(answer: ProfileAnswerFrame): void;
  /** False: messages never make the cache fetch (`ConnectOptions.profileCache`). */
  refresh: boolean;
}

/** Profiles by primary address, each with its version. */
export class ProfileCache {
  private readonly profiles = new Map<string, ProfileAnswerFrame>();
  /** The version last asked for per address, so one `pv` makes one request. */
  private readonly asked = new Map<string, number>();

  constructor(private readonly hooks: ProfileHooks) {}

  /** The cached profile of a person, by primary address. */
  of(address: string): ProfileAnswerFrame | undefined {
    return this.profiles.get(address);
  }

  /** Caches a `get` answer or a `profile` event. */
  set(profile: ProfileAnswerFrame | ProfileEventFrame): void {
    this.profiles.set(profile.address, profile);
  }

  /** A message handed to the app: its sender's profile is fetched, once, if newer than cached. */
  seen(m: MessageFrame): void {
    if (m.out || !this.hooks.refresh) return;
    const version = m.pv ?? 0;
    const cached = this.profiles.get(m.from);
    if (cached && cached.version >= version) return;
    if ((this.asked.get(m.from) ?? -1) >= version) return;
    this.asked.set(m.from, version);
    this.hooks.get(m.from).then(
      (answer) => this.hooks.fetched(answer),
      () => this.asked.delete(m.from), // asked again on the sender's next message
    );
  }
}
