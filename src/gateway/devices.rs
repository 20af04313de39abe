//! A device's own view of its person's devices: the `devices` op, and `revoke` (with
//! `--device-self-revoke`), which logs `devices_changed` like the backend's `tokendel`.

use super::replies::store_refusal;
use super::session::Online;
use crate::protocol::{
    CloseCode, DecodeError, DevicesList, DevicesRequest, ErrorCode, RevokeAnswer, RevokeRequest,
    ServerFrame,
};
use crate::state::now_millis;

impl Online<'_> {
    /// `devices`: this person's devices now, with who is online. The request's `id`, if any,
    /// is echoed on the answer and on a refusal.
    pub(super) async fn devices(&mut self, req: DevicesRequest) {
        let id = req.id;
        if let Some(Err(err)) = id.as_deref().map(super::ops::check_id) {
            return self.error(err, id, None).await;
        }
        match self.state.store.device_list(self.identity.person).await {
            Ok(devices) => {
                let frame = ServerFrame::Devices(DevicesList { id, devices });
                self.push(frame.to_text().into()).await;
            }
            Err(err) => {
                let err = store_refusal(err, "devices", "internal error; send it again");
                self.error(err, id, None).await;
            }
        }
    }

    /// `revoke`: revokes every token of a device of this person (this one included: a logout)
    /// and closes its connections with 4004, as `tokendel` does. The request's `id`, if any, is
    /// echoed on the answer and on a refusal.
    pub(super) async fn revoke(&mut self, req: RevokeRequest) {
        let id = req.id;
        if let Some(Err(err)) = id.as_deref().map(super::ops::check_id) {
            return self.error(err, id, None).await;
        }
        if !self.state.config.device_self_revoke {
            let err = DecodeError::new(
                ErrorCode::Forbidden,
                "devices may not revoke devices on this broker: the operator turns it on with --device-self-revoke (else the app's backend revokes with tokendel)",
            );
            return self.error(err, id, None).await;
        }
        let who = self.identity.clone();
        let revoked = match self
            .state
            .store
            .revoke_device(who, req.uid, now_millis())
            .await
        {
            Ok(revoked) => revoked,
            Err(err) => {
                let err = store_refusal(err, "revoke", "internal error; send it again");
                return self.error(err, id, None).await;
            }
        };
        // Answered before the kick: revoking itself, this device still reads its answer
        // before the close.
        let frame = ServerFrame::Revoke(RevokeAnswer {
            id,
            uid: revoked.uid,
            revoked: revoked.count,
        });
        self.push(frame.to_text().into()).await;
        let reason = if revoked.uid == self.identity.uid {
            "token revoked by this device (logged out)"
        } else {
            "token revoked by another device of this person: get a new token from your backend"
        };
        self.state
            .router
            .kick(revoked.person, revoked.uid, CloseCode::Revoked, reason);
    }
}
