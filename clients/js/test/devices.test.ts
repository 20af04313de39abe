/** The device-list frames against the real broker: `devices_changed`, `devices()`, `revoke()`. */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { OctetError, type DevicesChangedFrame } from "../src/index.js";
import { Broker, TEST_TIMEOUT_MS, closeAllClients, device, sleep, until } from "./harness.js";

let broker: Broker;

before(async () => {
  broker = await Broker.start(["--send-rate", "100000", "--send-burst", "100000", "--device-self-revoke"]);
});

after(async () => {
  closeAllClients();
  await broker.stop();
});

function ws(): string {
  return `ws://${broker.addr}/ws`;
}

test("a device linked while connected: one typed devices_changed, in seq order", { timeout: TEST_TIMEOUT_MS }, async () => {
  const phone = await device(ws(), (await broker.token("alice@d1", "a-phone")).token);
  await phone.client.whenLive();
  const changes: DevicesChangedFrame[] = [];
  phone.client.on("devices_changed", (c) => void changes.push(c));
  await broker.token("bob@d1", "b");
  await phone.client.send("bob@d1", "before");

  const laptop = await broker.token("alice@d1", "a-laptop");
  await phone.client.send("bob@d1", "after");
  await until("devices_changed", () => changes.length === 1);
  await until("both messages", () => phone.messages.length === 2);
  await sleep(300); // a second copy would come right behind the first
  assert.equal(changes.length, 1);
  const change = changes[0]!;
  assert.equal(change.change, "linked");
  assert.equal(change.uid, laptop.uid);
  assert.deepEqual(
    change.devices.map((d) => [d.device, d.primary]),
    [
      ["a-phone", true],
      ["a-laptop", false],
    ],
  );
  // The event sits between the two sends in the log, and the app got it there.
  assert.deepEqual(
    phone.events.map((e) => e.op),
    ["message", "devices_changed", "message"],
  );
  assert.deepEqual(
    phone.events.map((e) => e.seq),
    [1, 2, 3],
  );
});

test("devices() lists the person's devices, online now", { timeout: TEST_TIMEOUT_MS }, async () => {
  const phone = await device(ws(), (await broker.token("alice@d2", "a-phone")).token);
  const laptop = await device(ws(), (await broker.token("alice@d2", "a-laptop")).token);
  await Promise.all([phone.client.whenLive(), laptop.client.whenLive()]);
  const list = await phone.client.devices();
  assert.deepEqual(
    list.map((d) => [d.device, d.primary, d.online, d.active]),
    [
      ["a-phone", true, true, true],
      ["a-laptop", false, true, true],
    ],
  );
  assert.equal(list[0]?.address, "alice@d2");
});

test("revoke() logs another device out; a uid not of this person is refused", { timeout: TEST_TIMEOUT_MS }, async () => {
  const phone = await device(ws(), (await broker.token("alice@d3", "a-phone")).token);
  const laptopToken = await broker.token("alice@d3", "a-laptop");
  const laptop = await device(ws(), laptopToken.token);
  const stranger = await broker.token("carol@d3", "c");
  await Promise.all([phone.client.whenLive(), laptop.client.whenLive()]);
  let laptopClosed = false;
  laptop.client.on("closed", () => void (laptopClosed = true));

  await assert.rejects(phone.client.revoke(stranger.uid), (err: unknown) => {
    return err instanceof OctetError && err.code === "no_such_user";
  });
  const answer = await phone.client.revoke(laptopToken.uid);
  assert.deepEqual(answer, { op: "revoke", uid: laptopToken.uid, revoked: 1 });
  await until("the laptop stops for good", () => laptopClosed);
  await until("the phone hears of it", () =>
    phone.events.some((e) => e.op === "devices_changed" && e.change === "revoked" && e.uid === laptopToken.uid),
  );
});

test("revoke() without --device-self-revoke is refused with forbidden", { timeout: TEST_TIMEOUT_MS }, async () => {
  const plain = await Broker.start();
  try {
    const url = `ws://${plain.addr}/ws`;
    const phone = await device(url, (await plain.token("alice@d4", "a-phone")).token);
    const laptop = await plain.token("alice@d4", "a-laptop");
    await phone.client.whenLive();
    await assert.rejects(phone.client.revoke(laptop.uid), (err: unknown) => {
      return err instanceof OctetError && err.code === "forbidden";
    });
    // Nothing was revoked: the laptop's token still logs in. (Its entry in devices() would stay
    // either way: a revoked device is listed offline.)
    const lap = await device(url, laptop.token);
    await lap.client.whenLive();
  } finally {
    await plain.stop();
  }
});
