//! Fan-out of stored events: each is serialized once per person into the frame it is
//! delivered as, and handed to the router for every live device. Used by the gateway (sends,
//! acks, reads, profile changes, call records) and the backend API (profile changes), always
//! from a store `OnCommit` hook so that delivery follows commit order.

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::protocol::{
    CallRecordFrame, Message as MessageFrame, ProfileFrame, ReadMarker, Receipt, ServerFrame, Uid,
};
use crate::router::{Frame, Router};
use crate::store::{Appended, EventKind, LogEvent, Marker, OnCommit, PersonId};

/// Fans a stored message out: every live device of the recipient person, and the sender
/// person's other devices marked `out`. One serialization per person; the bytes are shared.
pub fn deliver_message(
    router: &Router,
    appended: &Appended,
    sender: (PersonId, Uid),
    body: Box<RawValue>,
) -> usize {
    let (sender_person, sender_uid) = sender;
    let mut width = 0;
    let frame = |seq, out, body| -> Frame {
        ServerFrame::Message(MessageFrame {
            pv: appended.pv,
            mid: appended.mid,
            seq,
            from: appended.from.clone(),
            to: appended.to.clone(),
            ts: appended.ts,
            out,
            body,
            files: appended.files.clone(),
        })
        .to_text()
        .into()
    };
    if appended.recipient != sender_person {
        let incoming = frame(appended.recipient_seq, false, body.clone());
        width += router.deliver(
            appended.recipient,
            &incoming,
            Some(appended.recipient_seq),
            None,
        );
    }
    let own = frame(appended.sender_seq, true, body);
    width += router.deliver(
        sender_person,
        &own,
        Some(appended.sender_seq),
        Some(sender_uid),
    );
    width
}

/// Delivers markers right after their commit, to every live device of each marker's person,
/// the device that caused them included: every device sees every seq of its person's log.
pub fn deliver_markers(router: Arc<Router>) -> OnCommit<Vec<Marker>> {
    Box::new(move |markers: &Vec<Marker>| {
        for marker in markers {
            let frame: Frame = event_frame(&marker.event).into();
            router.deliver(marker.person, &frame, Some(marker.event.seq), None);
        }
    })
}

/// A logged event as the frame it was delivered live as.
pub fn event_frame(event: &LogEvent) -> String {
    match &event.kind {
        EventKind::Message {
            mid,
            from,
            to,
            out,
            body,
            pv,
            files,
        } => ServerFrame::Message(MessageFrame {
            pv: *pv,
            mid: *mid,
            seq: event.seq,
            from: from.clone(),
            to: to.clone(),
            ts: event.ts,
            out: *out,
            body: body.clone(),
            files: files.clone(),
        })
        .to_text(),
        EventKind::Receipt { mid, peer, status } => ServerFrame::Receipt(Receipt {
            seq: event.seq,
            mid: *mid,
            status: status.clone(),
            peer: peer.clone(),
            ts: event.ts,
        })
        .to_text(),
        EventKind::Call {
            call,
            peer,
            out,
            status,
            duration_ms,
        } => ServerFrame::CallRecord(CallRecordFrame {
            seq: event.seq,
            call: call.clone(),
            peer: peer.clone(),
            out: *out,
            status: status.clone(),
            duration_ms: *duration_ms,
            ts: event.ts,
        })
        .to_text(),
        EventKind::Profile {
            address,
            profile,
            version,
        } => ServerFrame::Profile(ProfileFrame {
            seq: Some(event.seq),
            address: address.clone(),
            profile: profile.clone(),
            version: *version,
            ts: Some(event.ts),
        })
        .to_text(),
        EventKind::Read { upto, peer } => ServerFrame::Read(ReadMarker {
            seq: event.seq,
            peer: peer.clone(),
            upto: *upto,
            ts: event.ts,
        })
        .to_text(),
    }
}
